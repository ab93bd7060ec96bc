-- Placeholder so the migration runner has a first version; the schema proper starts at 001.
select 1;
