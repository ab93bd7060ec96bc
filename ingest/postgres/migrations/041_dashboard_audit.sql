-- Audit of logins and of reads of sensitive data (PIPL: student movement at gates, visitor
-- records, camera views). Who, when, what, which part of the org tree; never the data itself.
create table if not exists audit_log (
  id         bigserial primary key,
  at         timestamptz not null default now(),
  username   text,
  role       text,
  action     text not null,
  target     text,
  org_path   text,
  remote     text,
  detail     jsonb not null default '{}'::jsonb
);
create index if not exists audit_log_at on audit_log (at);
create index if not exists audit_log_user on audit_log (username, at);
