-- Readings and events. Each record is stored exactly once per (gateway_id, seq): see
-- 070_record_seqs.sql for the dedup key (events also keep their own primary key on it).
--
-- With TimescaleDB loadable (in shared_preload_libraries), readings is a hypertable; compression,
-- retention and the continuous aggregates readings_1m / readings_1h are set up by openStore()
-- (continuous aggregates cannot be created inside a transaction, which every migration is).
-- Without it, readings is a natively range-partitioned table (one partition per day, created by the
-- ingest ahead of the data, a default partition for clocks far off), with a BRIN index on ts, and
-- readings_1m / readings_1h are ordinary tables that the ingest keeps (see 003_rollup_dirty.sql).
-- The columns of the rollups are the same either way, so the queries are the same.
-- The database setting `xiaoan.timescale = off` (alter database … set xiaoan.timescale = off)
-- chooses native partitions even where TimescaleDB is loaded (docs/configuration.md).
--
-- readings_dedup below was the dedup key of the first version, (gateway_id, seq, ts): a unique
-- index on a partitioned table must contain the partition key, so a replay with another ts was
-- stored again. 070 replaces it with record_seqs and drops it.
do $$
declare
  timescale boolean := exists (select 1 from pg_available_extensions where name = 'timescaledb')
    and coalesce(current_setting('shared_preload_libraries', true), '') like '%timescaledb%'
    and lower(coalesce(current_setting('xiaoan.timescale', true), '')) not in ('off', 'false', 'no', '0');
begin
  if timescale then
    create extension if not exists timescaledb;
    create table if not exists readings (
      gateway_id text not null,
      seq        bigint not null,
      device_id  text not null,
      metric     text not null,
      ts         timestamptz not null,
      value      double precision not null,
      quality    text not null default 'good'
    );
    perform create_hypertable('readings', 'ts', chunk_time_interval => interval '1 day', if_not_exists => true);
  else
    create table if not exists readings (
      gateway_id text not null,
      seq        bigint not null,
      device_id  text not null,
      metric     text not null,
      ts         timestamptz not null,
      value      double precision not null,
      quality    text not null default 'good'
    ) partition by range (ts);
    create table if not exists readings_default partition of readings default;
    create index if not exists readings_ts_brin on readings using brin (ts);

    create table if not exists readings_1m (
      bucket     timestamptz not null,
      gateway_id text not null,
      device_id  text not null,
      metric     text not null,
      n          bigint not null,
      sum        double precision not null,
      min        double precision not null,
      max        double precision not null,
      primary key (gateway_id, device_id, metric, bucket)
    );
    create table if not exists readings_1h (like readings_1m including all);
  end if;
end
$$;

create unique index if not exists readings_dedup on readings (gateway_id, seq, ts);
create index if not exists readings_device_ts on readings (gateway_id, device_id, metric, ts);

-- The newest value per device and metric, kept by the ingest (one row per series).
create table if not exists latest_readings (
  gateway_id text not null,
  device_id  text not null,
  metric     text not null,
  ts         timestamptz not null,
  value      double precision not null,
  quality    text not null default 'good',
  primary key (gateway_id, device_id, metric)
);

create table if not exists events (
  gateway_id  text not null,
  seq         bigint not null,
  device_id   text not null,
  type        text not null,
  ts          timestamptz not null,
  priority    text not null check (priority in ('alarm', 'normal')),
  drill       boolean not null default false,
  data        jsonb not null default '{}',
  received_at timestamptz not null default now(),
  primary key (gateway_id, seq)
);
create index if not exists events_device_ts on events (gateway_id, device_id, ts);
create index if not exists events_ts on events (ts);

create table if not exists dead_letters (
  id            bigserial primary key,
  received_at   timestamptz not null default now(),
  topic         text not null,
  gateway_id    text,
  -- the org path the message would belong to (its gateway's, or the region of its topic); null when
  -- the topic itself is unreadable (then only province-wide scopes see it)
  org_path      text collate "C",
  reason        text not null,
  detail        text not null,
  payload       text not null,
  payload_bytes integer not null
);
create index if not exists dead_letters_org on dead_letters (org_path, received_at);
