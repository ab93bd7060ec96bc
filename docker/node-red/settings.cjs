// Node-RED settings for Xiaoan (mounted at /etc/node-red/settings.js by docker/city.yaml).
// The editor and admin API are closed: adminAuth is always on, and the process refuses to start
// without the admin password hash and the credential secret (secret files, never in the image).
'use strict';
const fs = require('node:fs');

function secret(name) {
  const file = process.env[`${name}_FILE`];
  const value = file ? readSecret(file, name) : process.env[name];
  if (!value) {
    throw new Error(
      `Node-RED: ${name} is not set; give it as a secret file through ${name}_FILE ` +
        '(docker/secrets/README.md says how to make one). 未设置管理员密钥，拒绝启动。',
    );
  }
  return value;
}

function readSecret(file, name) {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch (e) {
    throw new Error(`Node-RED: cannot read ${name}_FILE ${file} (${e.code || e.message})`);
  }
}

module.exports = {
  uiHost: '0.0.0.0',
  uiPort: Number(process.env.PORT || 1880),
  userDir: process.env.NODE_RED_USER_DIR || '/data',
  flowFile: 'flows.json',
  flowFilePretty: true,
  // Encrypts the credentials of flows (broker passwords …) in flows_cred.json.
  credentialSecret: secret('NODE_RED_CREDENTIAL_SECRET'),
  adminAuth: {
    type: 'credentials',
    users: [
      {
        username: process.env.NODE_RED_ADMIN_USER || 'admin',
        // bcrypt hash: `npx node-red admin hash-pw` (docker/secrets/README.md)
        password: secret('NODE_RED_ADMIN_PASSWORD_HASH'),
        permissions: '*',
      },
    ],
  },
  // Xiaoan's nodes (rules/node-red/) are loaded from the image's sources.
  nodesDir: (process.env.NODE_RED_NODES_DIR || '/app/rules/node-red').split(':'),
  // Function nodes may not load modules from the flow; Xiaoan logic lives in Xiaoan's nodes.
  functionExternalModules: false,
  externalModules: { autoInstall: false, palette: { allowInstall: false } },
  diagnostics: { enabled: false, ui: false },
  telemetry: { enabled: false },
  logging: { console: { level: process.env.NODE_RED_LOG_LEVEL || 'info', metrics: false, audit: true } },
  editorTheme: { projects: { enabled: false } },
  lang: 'zh-CN',
};
