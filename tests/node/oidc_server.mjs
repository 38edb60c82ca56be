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
// can see how often a verifier went back to the IdP (also `token`: POSTs to the token endpoint, and
// `token_exchange`: token-exchange requests that reached the grant). When listening, one line is printed:
//   oidc-provider ready <issuer>
//
// RFC 8693 token exchange (grant_type urn:ietf:params:oauth:grant-type:token-exchange) is served for clients
// whose `grant_types` list it: the subject_token must be a JWT this provider signed (not expired); the answer
// is a JWT access token with aud = the requested `resource` (or `audience`), sub = the subject token's sub,
// and `act: {sub: <the exchanging client>}` (RFC 8693 §4.1).
import fs from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';
import { errors } from 'oidc-provider';
import { createLocalJWKSet, jwtVerify } from 'jose';

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

// ---- RFC 8693 token exchange ------------------------------------------------------------------------------
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
// The public half of each signing key (key_ops too: the private key's ["sign"] would not allow verifying).
const PRIVATE_JWK_MEMBERS = new Set(['d', 'p', 'q', 'dp', 'dq', 'qi', 'key_ops']);
const publicKeys = createLocalJWKSet({
  keys: jwks.keys.map((key) => Object.fromEntries(Object.entries(key).filter(([k]) => !PRIVATE_JWK_MEMBERS.has(k)))),
});

// An exchanged token names the client that exchanged it as the actor (RFC 8693 §4.1).
const baseExtraTokenClaims = configuration.extraTokenClaims;
configuration.extraTokenClaims = async (ctx, token) => {
  const claims = await baseExtraTokenClaims(ctx, token);
  return token.gty === TOKEN_EXCHANGE ? { ...claims, act: { sub: token.clientId } } : claims;
};

async function tokenExchange(ctx) {
  counts.token_exchange += 1;
  const { params, client } = ctx.oidc;
  if (![ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE].includes(params.subject_token_type)) {
    throw new errors.InvalidRequest('subject_token_type must be an access token or a JWT');
  }
  if (!params.subject_token) throw new errors.InvalidRequest('subject_token is required');
  let subject;
  try {
    ({ payload: subject } = await jwtVerify(params.subject_token, publicKeys, { issuer: args.issuer }));
  } catch (error) {
    console.error('oidc_server: token exchange: subject_token refused:', error.code || error.message);
    throw new errors.InvalidGrant('subject_token is invalid or expired');
  }
  if (!subject.sub) throw new errors.InvalidGrant('subject_token has no sub');
  // The resource indicator names the audience when given; otherwise the (logical) audience does.
  const targets = [params.resource || params.audience].flat().filter(Boolean);
  if (!targets.length) throw new errors.InvalidTarget('an audience or resource is required');
  if (targets.length > 1) throw new errors.InvalidTarget('only one audience is supported');
  const [audience] = targets;
  const requested = params.scope ? params.scope.split(' ') : resourceScopes;
  const scope = requested.filter((s) => resourceScopes.includes(s)).join(' ') || undefined;
  const token = new provider.AccessToken({ accountId: subject.sub, client, gty: TOKEN_EXCHANGE, scope });
  token.resourceServer = new provider.ResourceServer(audience, {
    audience,
    scope: resourceScopes.join(' '),
    accessTokenFormat: 'jwt',
    accessTokenTTL: 600,
    jwt: { sign: { alg: 'RS256' } },
  });
  const value = await token.save();
  ctx.body = {
    access_token: value,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: 'Bearer',
    expires_in: token.expiration,
    ...(scope ? { scope } : {}),
  };
}

const provider = new Provider(args.issuer, configuration);
provider.on('server_error', (ctx, error) => console.error('oidc_server: server_error', error));
provider.registerGrantType(
  TOKEN_EXCHANGE,
  tokenExchange,
  ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'resource', 'scope',
    'actor_token', 'actor_token_type'],
  ['audience', 'resource'],
);

// `revocation` / `registration`: POSTs to those endpoints; `grants`: successful token grants by grant_type
// (how many refreshes the gateway made).
const counts = { discovery: 0, jwks: 0, revocation: 0, registration: 0, grants: {} };
provider.on('grant.success', (ctx) => {
  const grantType = ctx.oidc.params.grant_type;
  counts.grants[grantType] = (counts.grants[grantType] || 0) + 1;
});
counts.token = 0;
counts.token_exchange = 0;

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
  if (req.method === 'POST' && path === '/token/revocation') counts.revocation += 1;
  if (req.method === 'POST' && path === '/reg') counts.registration += 1;
  if (path === '/token' && req.method === 'POST') counts.token += 1;
  callback(req, res);
});

server.listen(Number(args.port), '127.0.0.1', () => {
  console.log(`oidc-provider ready ${args.issuer}`);
});

// Tests stop the provider with SIGTERM; open keep-alive connections must not keep it running.
const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
