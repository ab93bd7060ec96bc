// Gateway and service-account passwords use the one secret format of the platform (contract/secrets.ts).
export { hashSecret, verifySecret, verifyNothing } from '../contract/index.ts';
