// A real OpenID provider (npm oidc-provider) for tests/integration/test_oidc.py.
// node provider.mjs PORT KEYS_JSON CLIENTS_JSON
//   KEYS_JSON: a JWKS ({"keys": [private JWKs]}); the first signs.
//   CLIENTS_JSON: [{"client_id", "client_secret", "roles": [...], "audience"}]
// Access tokens are JWTs (RFC 9068) from the client_credentials grant, with
// a "roles" claim; the issuer is http://127.0.0.1:PORT.
// A client with "redirect_uris" is a public client of the authorization code
// flow with PKCE (the workbench's login, tests/integration/test_workbench.py);
// its users sign in on the provider's development login form (any login).
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const [port, keysFile, clientsFile] = process.argv.slice(2);
const jwks = JSON.parse(readFileSync(keysFile, 'utf8'));
const clients = JSON.parse(readFileSync(clientsFile, 'utf8'));
const byId = Object.fromEntries(clients.map((c) => [c.client_id, c]));
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  jwks,
  clients: clients.map((c) => (c.redirect_uris ? {
    client_id: c.client_id,
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: c.redirect_uris,
  } : {
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  })),
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: clients.some((c) => c.redirect_uris) },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (ctx, client) => byId[client.clientId].audience || 'urn:dxa-gateway',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, client) => ({
        scope: 'api',
        audience: resource,
        accessTokenFormat: 'jwt',
        accessTokenTTL: byId[client.clientId].ttl || 300,
        jwt: { sign: { alg: jwks.keys[0].alg || 'RS256' } },
      }),
    },
  },
  extraTokenClaims: (ctx, token) => ({ roles: byId[token.clientId].roles, preferred_username: token.accountId || token.clientId }),
});
provider.proxy = false;
provider.listen(Number(port), '127.0.0.1', () => console.log(`listening ${issuer}`));
