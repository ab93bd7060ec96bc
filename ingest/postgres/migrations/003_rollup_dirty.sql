-- Rollups without TimescaleDB are kept in two steps. The ingest marks, in the transaction that
-- stores the rows, which (gateway, minute) buckets received data; a refresher then recomputes those
-- buckets of readings_1m from the raw rows, and the hours containing them of readings_1h from
-- readings_1m (store.sink.refreshRollups, run by every ingest worker). Marking upserts the row, so
-- a refresher that takes a mark waits for the transaction that set it and then sees its rows.
create table if not exists rollup_dirty (
  gateway_id text not null,
  bucket     timestamptz not null,
  marked_at  timestamptz not null default now(),
  primary key (gateway_id, bucket)
);
create index if not exists rollup_dirty_bucket on rollup_dirty (bucket);
