-- Dead letters can be replayed (`xiaoan deadletters replay`): each row says when it was replayed
-- last and what came of it. `unit` tells a whole message (its payload is the message) from one
-- record set aside alone out of a valid batch (its payload is that record).
alter table dead_letters add column if not exists unit text not null default 'message';
alter table dead_letters add column if not exists replayed_at timestamptz;
alter table dead_letters add column if not exists replay_result text;
create index if not exists dead_letters_gateway on dead_letters (gateway_id, received_at);
