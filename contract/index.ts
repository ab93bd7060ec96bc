// contract/ — the wire format and domain types shared by every tier. Imports nothing of ours.
export * from './org.ts';
export * from './topics.ts';
export * from './messages.ts';
export * from './privacy.ts';
export * from './runtime.ts';
export * from './secrets.ts';
