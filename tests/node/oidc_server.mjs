// A real OpenID Provider (panva/oidc-provider 9) on loopback, for Manifold's tests.
//
//   node oidc_server.mjs --port 9500 --issuer http://127.0.0.1:9500 --jwks keys.json --clients clients.json \
//        [--accounts accounts.json] [--scopes "mcp:tools mcp:admin"]
//
// --jwks      a JWKS file holding the PRIVATE signing key(s). The test helper (tests/idp.py) writes it, so the
//             tests can also sign crafted tokens (expired, nbf, tampered) with this provider's real key.
// --clients   a JSON list of client metadata. Besides the standard fields a client may carry
//             `token_claims` (an object), added to every access token issued to it (email, groups, tenant…).
// --accounts  optional JSON object: login -> claims, for the authorization-code flow (devInteractions login
//             accepts any login; a listed one gets these claims in its ID token and access tokens).
//
// Access tokens are JWTs (RS256) whenever a `resource` indicator is sent: aud = the resource.
// `GET /__test/counts` answers how many times the discovery document and the JWKS were requested, so tests
// can see how often a verifier went back to the IdP. When listening, one line is printed:
//   oidc-provider ready <issuer>
import fs from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    issuer: { type: 'string' },
    jwks: { type: 'string' },
    clients: { type: 'string' },
    accounts: { type: 'string' },
    scopes: { type: 'string', default: 'mcp:tools' },
  },
});

for (const required of ['port', 'issuer', 'jwks', 'clients']) {
  if (!args[required]) {
    console.error(`oidc_server: --${required} is required`);
    process.exit(2);
  }
}

const readJson = (path) => JSON.parse(fs.readFileSync(path, 'utf8'));
const jwks = readJson(args.jwks);
const clients = readJson(args.clients);
const accounts = args.accounts ? readJson(args.accounts) : {};
const resourceScopes = args.scopes.split(/\s+/).filter(Boolean);

const JWKS_PATH = '/jwks';

const configuration = {
  clients,
  routes: { jwks: JWKS_PATH },
  jwks,
  scopes: ['openid', 'offline_access', 'email', 'profile', ...resourceScopes],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'groups'] },
  extraClientMetadata: { properties: ['token_claims'] },
  cookies: { keys: ['manifold-test-cookie-key'] },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    registration: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (ctx, client, oneOf) => oneOf,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => ({
        audience: resourceIndicator,
        scope: resourceScopes.join(' '),
        accessTokenFormat: 'jwt',
        accessTokenTTL: 600,
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...(accounts[id] || {}) };
      },
    };
  },
  // Client tokens get the client's `token_claims`; user tokens (auth code) get the account's claims.
  async extraTokenClaims(ctx, token) {
    if (token.accountId) {
      const claims = { ...(accounts[token.accountId] || {}) };
      delete claims.sub;
      return claims;
    }
    const client = await ctx.oidc.provider.Client.find(token.clientId);
    return client?.token_claims ?? undefined;
  },
};

const provider = new Provider(args.issuer, configuration);
provider.on('server_error', (ctx, error) => console.error('oidc_server: server_error', error));

const counts = { discovery: 0, jwks: 0 };

const callback = provider.callback();
const server = http.createServer((req, res) => {
  const path = new URL(req.url, args.issuer).pathname;
  if (path === '/__test/counts') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(counts));
    return;
  }
  if (path === '/.well-known/openid-configuration') counts.discovery += 1;
  if (path === JWKS_PATH) counts.jwks += 1;
  callback(req, res);
});

server.listen(Number(args.port), '127.0.0.1', () => {
  console.log(`oidc-provider ready ${args.issuer}`);
});

// Tests stop the provider with SIGTERM; open keep-alive connections must not keep it running.
const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
