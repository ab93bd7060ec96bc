-- Dashboard users (security desk, technicians, rule authors, region staff) and their sessions.
-- A user's scope is one org path; everything they see lies in its subtree.
create table if not exists users (
  username      text primary key check (username ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
  password_hash text not null,
  role          text not null check (role in ('desk', 'tech', 'author', 'admin')),
  org_path      text not null,
  display_name  text not null default '',
  disabled      boolean not null default false,
  created_at    timestamptz not null default now(),
  updated_at    timestamptz not null default now()
);
create index if not exists users_org_path on users (org_path collate "C");

-- Sessions: only the SHA-256 of the token is stored, so a leaked table cannot be replayed.
create table if not exists sessions (
  token_hash  text primary key,
  username    text not null references users (username) on delete cascade,
  csrf_token  text not null,
  created_at  timestamptz not null default now(),
  last_seen   timestamptz not null default now(),
  expires_at  timestamptz not null
);
create index if not exists sessions_username on sessions (username);
create index if not exists sessions_expires on sessions (expires_at);
