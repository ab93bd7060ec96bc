-- Every new rule version (from the rulebook, the dashboards' rules page or anything else that
-- writes rule_versions) is announced on 'xiaoan_rule_changes', so every running alerting
-- hot-reloads it. Owner: rules/alerts.
create or replace function xiaoan_rule_versions_notify() returns trigger language plpgsql as $$
begin
  perform pg_notify('xiaoan_rule_changes', json_build_object('ruleId', new.rule_id, 'version', new.version, 'action', new.action, 'author', new.author)::text);
  return new;
end
$$;
drop trigger if exists rule_versions_notify on rule_versions;
create trigger rule_versions_notify after insert on rule_versions for each row execute function xiaoan_rule_versions_notify();
