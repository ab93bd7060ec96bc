-- Alerts and their lifecycle (raised → acknowledged → resolved, or cleared by the rule), with
-- who and when for every step, the delivery outbox (written in the same transaction as the
-- alert), drills, per-site rule state, linkage audit and attachments. Owner: rules/alerts.

create table if not exists alerts (
  id                text primary key,
  -- rule + gateway + device (or group): at most one open alert per key
  dedup_key         text not null,
  rule_id           text not null,
  rule_version      text not null default '',
  title_zh          text not null,
  title_en          text not null,
  category          text not null check (category in ('hazard', 'emergency')),
  severity          text not null check (severity in ('info', 'minor', 'major', 'critical', 'fatal')),
  state             text not null check (state in ('raised', 'acknowledged', 'resolved', 'cleared')),
  drill             boolean not null default false,
  org_path          text collate "C" not null,
  gateway_id        text not null,
  device_id         text not null,
  value             double precision,
  event_type        text,
  reason_zh         text not null default '',
  reason_en         text not null default '',
  raised_at         timestamptz not null,
  acknowledged_at   timestamptz,
  acknowledged_by   text,
  ack_comment       text,
  resolved_at       timestamptz,
  resolved_by       text,
  resolve_comment   text,
  cleared_at        timestamptz,
  escalated_to      text collate "C",
  escalation_level  integer not null default 0,
  escalate_after_ms bigint,
  escalate_at       timestamptz,
  -- counts the transitions of this alert; part of each delivery's idempotency key
  transition_seq    integer not null default 0,
  updated_at        timestamptz not null
);
create unique index if not exists alerts_one_open on alerts (dedup_key) where state in ('raised', 'acknowledged');
create index if not exists alerts_org_raised on alerts (org_path, raised_at desc);
create index if not exists alerts_escalate on alerts (escalate_at) where state = 'raised';

create table if not exists alert_history (
  id         bigserial primary key,
  alert_id   text not null references alerts (id) on delete cascade,
  at         timestamptz not null,
  action     text not null check (action in ('raised', 'worsened', 'acknowledged', 'escalated', 'resolved', 'cleared', 'action', 'attachment')),
  actor      text not null,
  from_state text,
  to_state   text not null,
  severity   text not null,
  comment    text,
  detail     jsonb not null default '{}'
);
create index if not exists alert_history_alert on alert_history (alert_id, id);

create table if not exists alert_outbox (
  id              bigserial primary key,
  alert_id        text not null,
  idempotency_key text not null unique,
  category        text not null check (category in ('hazard', 'emergency')),
  transition      text not null,
  payload         jsonb not null,
  created_at      timestamptz not null,
  attempts        integer not null default 0,
  next_attempt_at timestamptz not null,
  leased_until    timestamptz,
  delivered_at    timestamptz,
  dead_at         timestamptz,
  last_status     integer,
  last_error      text
);
create index if not exists alert_outbox_pending on alert_outbox (next_attempt_at) where delivered_at is null and dead_at is null;
create index if not exists alert_outbox_alert on alert_outbox (alert_id, id);

create table if not exists drills (
  id         bigserial primary key,
  org_path   text collate "C" not null,
  starts_at  timestamptz not null,
  ends_at    timestamptz not null,
  started_by text not null,
  created_at timestamptz not null default now()
);
create index if not exists drills_active on drills (ends_at);

-- the rule engine's state per site, saved with the alerts so a restart neither re-raises nor forgets
create table if not exists rule_state (
  site       text collate "C" primary key,
  state      jsonb not null,
  updated_at timestamptz not null
);

-- linkage (联动) audit: every action tried, with its outcome
create table if not exists alert_actions (
  id        bigserial primary key,
  alert_id  text not null references alerts (id) on delete cascade,
  at        timestamptz not null,
  action    text not null,
  gateway_id text,
  device_id text,
  ok        boolean not null,
  detail    text not null default ''
);
create index if not exists alert_actions_alert on alert_actions (alert_id, id);

create table if not exists alert_attachments (
  id         bigserial primary key,
  alert_id   text not null references alerts (id) on delete cascade,
  kind       text not null,
  mime       text not null,
  device_id  text,
  data       bytea not null,
  created_at timestamptz not null
);
create index if not exists alert_attachments_alert on alert_attachments (alert_id);
