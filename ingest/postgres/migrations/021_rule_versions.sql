-- Rule change control: every version of every rule kept, with who, when and the diff.
-- Owner: rules/alerts.
create table if not exists rule_versions (
  rule_id    text not null,
  version    integer not null,
  hash       text not null,
  source     text not null,
  action     text not null check (action in ('create', 'update', 'delete', 'enable', 'disable')),
  author     text not null,
  comment    text not null default '',
  diff       text not null default '',
  created_at timestamptz not null,
  primary key (rule_id, version)
);
