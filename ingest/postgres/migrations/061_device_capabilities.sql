-- What a device can do, from its profile, as the gateway's birth message carries it (contract
-- deviceCapabilitiesSchema): evacuation-release points and values, snapshot, alarm events by kind.
-- Linkage and pages read this, never the profile's name. NULL: the gateway sent none (older edge).
alter table devices add column if not exists capabilities jsonb;
