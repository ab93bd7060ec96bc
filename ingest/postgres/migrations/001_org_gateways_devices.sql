-- Org tree (province → city → county → school; province → university → college), the gateways
-- known centrally and the devices behind them. Org paths use the "C" collation so that the
-- range predicate of scopeSql() (ingest/scope.ts) is served by a btree index.
create table if not exists org_nodes (
  path    text collate "C" primary key,
  parent  text collate "C",
  level   text not null check (level in ('province', 'city', 'county', 'school', 'university', 'college')),
  code    text not null,
  name_zh text not null,
  name_en text not null default ''
);
create index if not exists org_nodes_parent on org_nodes (parent);

create table if not exists gateways (
  id             text primary key,
  org_path       text collate "C" not null,
  county         text not null check (county ~ '^[0-9]{6}$'),
  name           text not null default '',
  secret_hash    text not null,
  state          text not null default 'unknown' check (state in ('unknown', 'online', 'offline')),
  last_seen      timestamptz,
  -- ts of the last status message applied; an older (redelivered) status never overwrites a newer one
  status_ts      timestamptz,
  version        text,
  buffer_depth   integer,
  buffer_dropped integer,
  created_at     timestamptz not null default now()
);
create index if not exists gateways_org_path on gateways (org_path);

create table if not exists devices (
  gateway_id           text not null references gateways (id) on delete cascade,
  device_id            text not null,
  org_path             text collate "C" not null,
  profile              text not null default '',
  name                 text not null default '',
  building             text,
  room                 text,
  location             text,
  state                text not null default 'unknown' check (state in ('unknown', 'online', 'degraded', 'offline')),
  last_seen            timestamptz,
  expected_interval_ms integer,
  primary key (gateway_id, device_id)
);
create index if not exists devices_org_path on devices (org_path);
