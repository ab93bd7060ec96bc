-- Exactly once on (gateway, seq), whatever the timestamp (docs/delivery.md, "Exactly once").
--
-- Every uplink batch carries `floor`, the lowest seq the gateway still holds without a receipt;
-- every seq below the highest floor seen for a gateway is in the centre's custody already or was
-- never sent. So a reading is new iff its seq is at or above its gateway's floor and
-- (gateway_id, seq) is not in record_seqs. The writer (ingest/postgres/writer.ts) raises the
-- floor and inserts the keys in the transaction that stores the rows; pruneSeqs() forgets the
-- keys below the floor later, off the commit (pruned_to: every key below it is forgotten).
-- record_seqs is not partitioned, so its key is exactly (gateway_id, seq). Events keep their own
-- primary key (gateway_id, seq) on the unpartitioned events table and honour the floor too.
create table if not exists gateway_floor (
  gateway_id text primary key,
  floor      bigint not null default 0,
  pruned_to  bigint not null default 0
);

create table if not exists record_seqs (
  gateway_id text not null,
  seq        bigint not null,
  primary key (gateway_id, seq)
);

-- Upgrade: the keys of the readings stored so far (the old key let one (gateway, seq) in more than
-- once when its ts differed; they count once here). Gateways that send no floor never prune.
insert into record_seqs (gateway_id, seq)
select distinct gateway_id, seq from readings order by 1, 2
on conflict do nothing;

-- The old key (gateway_id, seq, ts) is replaced; nothing else uses it (queries go by
-- readings_device_ts, rollups by ts).
drop index if exists readings_dedup;
