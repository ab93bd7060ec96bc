// 校安 Xiaoan nodes for Node-RED (runtime side; the editor side is xiaoan.html).
//
//   xiaoan-server    config: the Xiaoan API (dashboards) and the central MQTT broker, with credentials
//   xiaoan-readings  in:  readings (output 1) and events (output 2) of a region, from the broker
//   xiaoan-alerts    in:  alert changes in the account's scope, from the API's live stream (SSE)
//   xiaoan-raise     out: raises (or clears) an alert by publishing a `flow.*` event as the site's
//                        software gateway; the built-in rules flow-alarm / flow-emergency turn it into an alert
//   xiaoan-ack       out: acknowledges or resolves an alert through the API
//
// Health is state: every node shows connected / connecting / disconnected. Secrets live in
// credentials, never in the flow file.
'use strict';

const mqtt = require('mqtt');

const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** GB/T 2260 region code → topic region path: '370102' → '37/3701/370102' */
function regionPath(code) {
  if (!/^\d{2}(\d{2}(\d{2})?)?$/.test(code || '')) throw new Error(`region "${code}" must be 2, 4 or 6 digits (e.g. 37, 3701, 370102)`);
  const parts = [code.slice(0, 2)];
  if (code.length >= 4) parts.push(code.slice(0, 4));
  if (code.length === 6) parts.push(code);
  return parts.join('/');
}

function backoff(attempt) {
  return Math.min(30000, 500 * 2 ** Math.min(attempt, 6));
}

module.exports = function (RED) {
  // ---- config node ---------------------------------------------------------------------------
  function XiaoanServer(config) {
    RED.nodes.createNode(this, config);
    this.apiUrl = (config.apiUrl || '').replace(/\/+$/, '');
    this.brokerUrl = config.brokerUrl || '';
    const creds = this.credentials || {};
    let token = null;
    let pending = null;

    /** bearer token from POST /api/login (cached; renewed on 401) */
    this.token = async (renew) => {
      if (token && !renew) return token;
      if (pending) return pending;
      if (!this.apiUrl) throw new Error(RED._('xiaoan.errors.no-api'));
      pending = (async () => {
        const r = await fetch(`${this.apiUrl}/api/login`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ username: creds.username || '', password: creds.password || '' }),
        });
        const body = await r.json().catch(() => ({}));
        if (r.status !== 200 || !body.token) throw new Error(`${RED._('xiaoan.errors.login')} (HTTP ${r.status} ${body.error || ''})`);
        token = body.token;
        return token;
      })();
      try {
        return await pending;
      } finally {
        pending = null;
      }
    };

    /** an API call with the bearer token; one retry after a fresh login on 401 */
    this.api = async (method, path, body) => {
      for (let attempt = 0; attempt < 2; attempt++) {
        const t = await this.token(attempt > 0);
        const r = await fetch(`${this.apiUrl}${path}`, {
          method,
          headers: { authorization: `Bearer ${t}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        if (r.status === 401 && attempt === 0) continue;
        const text = await r.text();
        let parsed = text;
        try {
          parsed = JSON.parse(text);
        } catch (_) {
          /* not JSON */
        }
        return { status: r.status, body: parsed };
      }
      throw new Error(RED._('xiaoan.errors.login'));
    };

    /** an MQTT connection to the central broker with the given credentials */
    this.connect = (username, password, clientPrefix) =>
      mqtt.connect(this.brokerUrl, {
        clientId: `${clientPrefix}-${Math.random().toString(16).slice(2, 10)}`,
        username,
        password,
        protocolVersion: 4,
        reconnectPeriod: 2000,
        clean: true,
      });
    this.mqttCredentials = () => ({ username: creds.mqttUsername || '', password: creds.mqttPassword || '' });
  }
  RED.nodes.registerType('xiaoan-server', XiaoanServer, {
    credentials: {
      username: { type: 'text' },
      password: { type: 'password' },
      mqttUsername: { type: 'text' },
      mqttPassword: { type: 'password' },
    },
  });

  const statusOf = (node, state, extra) => {
    const fill = state === 'connected' ? 'green' : state === 'connecting' ? 'yellow' : 'red';
    node.status({ fill, shape: state === 'connected' ? 'dot' : 'ring', text: RED._(`xiaoan.status.${state}`) + (extra ? ` ${extra}` : '') });
    node.health = state;
  };

  // ---- readings and events in --------------------------------------------------------------
  function XiaoanReadings(config) {
    RED.nodes.createNode(this, config);
    const node = this;
    const server = RED.nodes.getNode(config.server);
    if (!server) return statusOf(node, 'disconnected', RED._('xiaoan.errors.no-server'));
    let base;
    try {
      base = `xiaoan/v1/${regionPath(config.region || '37')}`;
    } catch (e) {
      node.error(e.message);
      return statusOf(node, 'disconnected', e.message);
    }
    const metric = config.metric || '';
    const { username, password } = server.mqttCredentials();
    statusOf(node, 'connecting');
    const client = server.connect(username, password, 'node-red-readings');
    client.on('connect', () => {
      statusOf(node, 'connected');
      client.subscribe([`${base}/#`], { qos: 1 });
    });
    client.on('close', () => statusOf(node, 'disconnected'));
    client.on('error', (e) => node.warn(`${RED._('xiaoan.errors.broker')}: ${e.message}`));
    client.on('message', (topic, payload) => {
      const channel = topic.split('/').pop();
      if (channel !== 'readings' && channel !== 'events') return;
      let batch;
      try {
        batch = JSON.parse(payload.toString('utf8'));
      } catch (_) {
        return; // ingest dead-letters it; a flow node only passes on what parses
      }
      if (!batch || batch.v !== 1 || !ID.test(batch.gateway || '')) return;
      if (channel === 'readings' && Array.isArray(batch.readings)) {
        for (const r of batch.readings) {
          if (metric && r.metric !== metric) continue;
          node.send([{ topic: `${batch.gateway}/${r.device}/${r.metric}`, payload: { gateway: batch.gateway, ...r } }, null]);
        }
      } else if (channel === 'events' && Array.isArray(batch.events)) {
        for (const e of batch.events) node.send([null, { topic: `${batch.gateway}/${e.device}/${e.type}`, payload: { gateway: batch.gateway, ...e } }]);
      }
    });
    node.on('close', (done) => client.end(true, {}, () => done()));
  }
  RED.nodes.registerType('xiaoan-readings', XiaoanReadings);

  // ---- alerts in (live stream) ---------------------------------------------------------------
  function XiaoanAlerts(config) {
    RED.nodes.createNode(this, config);
    const node = this;
    const server = RED.nodes.getNode(config.server);
    if (!server) return statusOf(node, 'disconnected', RED._('xiaoan.errors.no-server'));
    const onlyCategory = config.category || '';
    let closed = false;
    let ctrl = null;
    let attempt = 0;

    const handle = (event, data) => {
      if (event !== 'alert') return;
      let parsed;
      try {
        parsed = JSON.parse(data);
      } catch (_) {
        return;
      }
      const alert = parsed.alert;
      if (!alert || (onlyCategory && alert.category !== onlyCategory)) return;
      node.send({ topic: `${alert.category}/${alert.state}`, payload: alert, change: parsed.change });
    };

    const run = async () => {
      while (!closed) {
        statusOf(node, 'connecting');
        try {
          let token = await server.token(attempt > 0);
          ctrl = new AbortController();
          const res = await fetch(`${server.apiUrl}/api/stream`, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' }, signal: ctrl.signal });
          if (res.status !== 200 || !res.body) throw new Error(`stream HTTP ${res.status}`);
          statusOf(node, 'connected');
          attempt = 0;
          const decoder = new TextDecoder();
          let buf = '';
          for await (const chunk of res.body) {
            buf += decoder.decode(chunk, { stream: true });
            let i;
            while ((i = buf.indexOf('\n\n')) >= 0) {
              const block = buf.slice(0, i);
              buf = buf.slice(i + 2);
              let event = 'message';
              const data = [];
              for (const line of block.split('\n')) {
                if (line.startsWith('event:')) event = line.slice(6).trim();
                else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
              }
              if (data.length) handle(event, data.join('\n'));
            }
          }
          throw new Error('stream ended');
        } catch (e) {
          if (closed) return;
          statusOf(node, 'disconnected');
          node.debug(`alerts stream: ${e.message}`);
          await new Promise((r) => setTimeout(r, backoff(attempt++)));
        }
      }
    };
    run();
    node.on('close', (done) => {
      closed = true;
      if (ctrl) ctrl.abort();
      done();
    });
  }
  RED.nodes.registerType('xiaoan-alerts', XiaoanAlerts);

  // ---- raise (as the site's software gateway) ----------------------------------------------
  function XiaoanRaise(config) {
    RED.nodes.createNode(this, config);
    const node = this;
    const server = RED.nodes.getNode(config.server);
    if (!server) return statusOf(node, 'disconnected', RED._('xiaoan.errors.no-server'));
    const gatewayId = config.gateway || '';
    const county = config.county || '';
    const creds = this.credentials || {};
    let topic;
    try {
      if (!ID.test(gatewayId)) throw new Error(RED._('xiaoan.errors.gateway'));
      if (!/^\d{6}$/.test(county)) throw new Error(RED._('xiaoan.errors.county'));
      topic = `xiaoan/v1/${regionPath(county)}/${gatewayId}/events`;
    } catch (e) {
      node.error(e.message);
      return statusOf(node, 'disconnected', e.message);
    }
    // seq must only ever increase for this gateway, also across restarts: start from the clock in µs
    const ctx = node.context();
    let seq = Math.max(Number(ctx.get('seq') || 0), Date.now() * 1000);
    statusOf(node, 'connecting');
    const client = server.connect(gatewayId, creds.password || '', `${gatewayId}-node-red`);
    client.on('connect', () => statusOf(node, 'connected'));
    client.on('close', () => statusOf(node, 'disconnected'));
    client.on('error', (e) => node.warn(`${RED._('xiaoan.errors.broker')}: ${e.message}`));

    node.on('input', (msg, send, done) => {
      const p = msg.payload && typeof msg.payload === 'object' ? msg.payload : {};
      const kind = msg.clear || p.clear ? 'clear' : p.category || config.category || 'hazard';
      const type = kind === 'clear' ? 'flow.clear' : kind === 'emergency' ? 'flow.emergency' : 'flow.hazard';
      const device = p.device || config.device || 'flow';
      if (!ID.test(device)) return done(new Error(`${RED._('xiaoan.errors.device')}: "${device}"`));
      const data = {};
      for (const [k, v] of Object.entries(p.data && typeof p.data === 'object' ? p.data : {})) if (['string', 'number', 'boolean'].includes(typeof v)) data[k] = v;
      if (typeof p.reason === 'string') data.reason = p.reason.slice(0, 500);
      seq += 1;
      ctx.set('seq', seq);
      const now = Date.now();
      const batch = { v: 1, gateway: gatewayId, sentAt: now, events: [{ seq, device, type, ts: now, priority: kind === 'emergency' ? 'alarm' : 'normal', drill: !!p.drill, data }] };
      client.publish(topic, JSON.stringify(batch), { qos: 1 }, (err) => {
        if (err) return done(err);
        send({ ...msg, payload: batch.events[0], topic });
        done();
      });
    });
    node.on('close', (done) => client.end(false, {}, () => done()));
  }
  RED.nodes.registerType('xiaoan-raise', XiaoanRaise, { credentials: { password: { type: 'password' } } });

  // ---- acknowledge / resolve -----------------------------------------------------------------
  function XiaoanAck(config) {
    RED.nodes.createNode(this, config);
    const node = this;
    const server = RED.nodes.getNode(config.server);
    if (!server) return statusOf(node, 'disconnected', RED._('xiaoan.errors.no-server'));
    const action = config.action === 'resolve' ? 'resolve' : 'ack';
    node.on('input', async (msg, send, done) => {
      const id = msg.alertId || (msg.payload && typeof msg.payload === 'object' ? msg.payload.id : msg.payload);
      if (typeof id !== 'string' || !id) return done(new Error(RED._('xiaoan.errors.alert-id')));
      const comment = typeof msg.comment === 'string' ? msg.comment : config.comment || '';
      try {
        const r = await server.api('POST', `/api/alerts/${encodeURIComponent(id)}/${action}`, { comment });
        if (r.status !== 200) {
          const err = new Error(`${action} ${id}: HTTP ${r.status} ${(r.body && r.body.error) || ''}`);
          node.status({ fill: 'red', shape: 'ring', text: `HTTP ${r.status}` });
          return done(err);
        }
        node.status({ fill: 'green', shape: 'dot', text: `${action} ${id.slice(0, 8)}` });
        send({ ...msg, payload: r.body.alert || r.body });
        done();
      } catch (e) {
        node.status({ fill: 'red', shape: 'ring', text: RED._('xiaoan.status.disconnected') });
        done(e);
      }
    });
  }
  RED.nodes.registerType('xiaoan-ack', XiaoanAck);
};
