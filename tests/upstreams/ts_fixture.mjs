// A 2025-11-25-era MCP server on the TypeScript SDK, exposing the conformance suite's test_* fixtures.
//
//     tests/node/node_modules/.bin/node tests/upstreams/ts_fixture.mjs --port 8123     # or PORT=8123
//
// Plain ESM JavaScript (no build step) on @modelcontextprotocol/sdk from tests/node (McpServer +
// StreamableHTTPServerTransport, one stateful session per initialize, an in-memory event store for
// resumption), served by node:http on 127.0.0.1 only, at /mcp. It is a second, independent
// implementation of the fixtures tests/upstreams/conformance_server.py offers in Python: the gateway
// must relay what a TypeScript server does on the wire, including sampling and elicitation sent as
// server->client requests on the POST's SSE stream while a tools/call runs.
//
// Requests whose Host or Origin is not loopback are refused with 403 (DNS-rebinding protection,
// which the suite's dns-rebinding-protection scenario checks). Started by
// tests/upstreams/launch.py `run_ts_fixture`.

import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

const HERE = path.dirname(fileURLToPath(import.meta.url));
// The SDK lives in tests/node/node_modules, which Node's resolver does not search from this folder.
const NODE_MODULES = process.env.MCP_NODE_MODULES ?? path.join(HERE, '..', 'node', 'node_modules');
const load = (relative) => import(pathToFileURL(path.join(NODE_MODULES, relative)).href);

const { McpServer, ResourceTemplate } = await load('@modelcontextprotocol/sdk/dist/esm/server/mcp.js');
const { StreamableHTTPServerTransport } = await load('@modelcontextprotocol/sdk/dist/esm/server/streamableHttp.js');
const types = await load('@modelcontextprotocol/sdk/dist/esm/types.js');
const { z } = await load('zod/index.js');

const HOST = '127.0.0.1';
const LOOPBACK_NAMES = new Set(['127.0.0.1', 'localhost', '[::1]']);

function portFromArgs() {
  const index = process.argv.indexOf('--port');
  if (index !== -1 && process.argv[index + 1]) return Number(process.argv[index + 1]);
  const inline = process.argv.find((arg) => arg.startsWith('--port='));
  if (inline) return Number(inline.split('=')[1]);
  if (process.env.PORT) return Number(process.env.PORT);
  return 3000;
}

// 1x1 red PNG and a minimal WAV, as the suite's reference server sends them.
const PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';
const WAV = 'UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=';

const JSON_SCHEMA_2020_12 = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  type: 'object',
  $defs: {
    address: { type: 'object', properties: { street: { type: 'string' }, city: { type: 'string' } } },
  },
  properties: { name: { type: 'string' }, address: { $ref: '#/$defs/address' } },
  additionalProperties: false,
};

const text = (value) => ({ content: [{ type: 'text', text: value }] });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- resumability (SEP-1699): every SSE event is stored, replayed after Last-Event-ID ----

function eventStore() {
  const events = new Map(); // eventId -> {streamId, message}; bounded by the session's life
  let counter = 0;
  return {
    async storeEvent(streamId, message) {
      counter += 1;
      const eventId = `${streamId}::${String(counter).padStart(12, '0')}`;
      events.set(eventId, { streamId, message });
      return eventId;
    },
    async replayEventsAfter(lastEventId, { send }) {
      const streamId = lastEventId.split('::')[0];
      for (const [eventId, event] of events) {
        if (event.streamId === streamId && eventId > lastEventId && Object.keys(event.message).length > 0) {
          await send(eventId, event.message);
        }
      }
      return streamId;
    },
  };
}

// ---- the fixtures ----

const FORM_SCHEMA_DEFAULTS = {
  type: 'object',
  properties: {
    name: { type: 'string', description: 'User name', default: 'John Doe' },
    age: { type: 'integer', description: 'User age', default: 30 },
    score: { type: 'number', description: 'User score', default: 95.5 },
    status: { type: 'string', description: 'User status', enum: ['active', 'inactive', 'pending'], default: 'active' },
    verified: { type: 'boolean', description: 'Verification status', default: true },
  },
  required: [],
};

const FORM_SCHEMA_ENUMS = {
  type: 'object',
  properties: {
    untitledSingle: { type: 'string', description: 'Select one option', enum: ['option1', 'option2', 'option3'] },
    titledSingle: {
      type: 'string',
      description: 'Select one option with titles',
      oneOf: [
        { const: 'value1', title: 'First Option' },
        { const: 'value2', title: 'Second Option' },
        { const: 'value3', title: 'Third Option' },
      ],
    },
    legacyEnum: {
      type: 'string',
      description: 'Select one option (legacy)',
      enum: ['opt1', 'opt2', 'opt3'],
      enumNames: ['Option One', 'Option Two', 'Option Three'],
    },
    untitledMulti: {
      type: 'array',
      description: 'Select multiple options',
      minItems: 1,
      maxItems: 3,
      items: { type: 'string', enum: ['option1', 'option2', 'option3'] },
    },
    titledMulti: {
      type: 'array',
      description: 'Select multiple options with titles',
      minItems: 1,
      maxItems: 3,
      items: {
        anyOf: [
          { const: 'value1', title: 'First Choice' },
          { const: 'value2', title: 'Second Choice' },
          { const: 'value3', title: 'Third Choice' },
        ],
      },
    },
  },
  required: [],
};

function buildServer(transports) {
  const mcp = new McpServer(
    { name: 'manifold-ts-fixture', version: '1.0.0' },
    {
      capabilities: {
        tools: { listChanged: true },
        resources: { subscribe: true, listChanged: true },
        prompts: { listChanged: true },
        logging: {},
        completions: {},
      },
    },
  );
  const server = mcp.server;

  const elicit = async (params, label) => {
    try {
      const result = await server.elicitInput(params);
      return text(`${label}: action=${result.action}, content=${JSON.stringify(result.content ?? {})}`);
    } catch (error) {
      return text(`Elicitation not supported or error: ${error.message}`);
    }
  };

  mcp.registerTool('test_simple_text', { description: 'Tests simple text content response' }, async () =>
    text('This is a simple text response for testing.'),
  );
  mcp.registerTool('test_image_content', { description: 'Tests image content response' }, async () => ({
    content: [{ type: 'image', data: PNG, mimeType: 'image/png' }],
  }));
  mcp.registerTool('test_audio_content', { description: 'Tests audio content response' }, async () => ({
    content: [{ type: 'audio', data: WAV, mimeType: 'audio/wav' }],
  }));
  mcp.registerTool('test_embedded_resource', { description: 'Tests embedded resource content response' }, async () => ({
    content: [
      {
        type: 'resource',
        resource: { uri: 'test://embedded-resource', mimeType: 'text/plain', text: 'This is an embedded resource content.' },
      },
    ],
  }));
  mcp.registerTool(
    'test_multiple_content_types',
    { description: 'Tests response with multiple content types (text, image, resource)' },
    async () => ({
      content: [
        { type: 'text', text: 'Multiple content types test:' },
        { type: 'image', data: PNG, mimeType: 'image/png' },
        {
          type: 'resource',
          resource: {
            uri: 'test://mixed-content-resource',
            mimeType: 'application/json',
            text: JSON.stringify({ test: 'data', value: 123 }),
          },
        },
      ],
    }),
  );
  mcp.registerTool(
    'test_tool_with_logging',
    { description: 'Tests tool that emits log messages during execution', inputSchema: {} },
    async (_args, { sendNotification }) => {
      for (const data of ['Tool execution started', 'Tool processing data', 'Tool execution completed']) {
        await sendNotification({ method: 'notifications/message', params: { level: 'info', data } });
        await sleep(20);
      }
      return text('Tool with logging executed successfully');
    },
  );
  mcp.registerTool(
    'test_tool_with_progress',
    { description: 'Tests tool that reports progress notifications', inputSchema: {} },
    async (_args, { sendNotification, _meta }) => {
      const progressToken = _meta?.progressToken ?? 0;
      for (const progress of [0, 50, 100]) {
        await sendNotification({
          method: 'notifications/progress',
          params: { progressToken, progress, total: 100, message: `Completed step ${progress} of 100` },
        });
        await sleep(20);
      }
      return text(String(progressToken));
    },
  );
  mcp.registerTool('test_error_handling', { description: 'Tests error response handling' }, async () => {
    throw new Error('This tool intentionally returns an error for testing');
  });
  mcp.registerTool(
    'test_reconnection',
    {
      description: 'Closes the SSE stream mid-call; the result arrives after the client reconnects (SEP-1699)',
      inputSchema: {},
    },
    async (_args, { sessionId, requestId }) => {
      const transport = sessionId ? transports.get(sessionId) : undefined;
      if (transport && requestId !== undefined) transport.closeSSEStream(requestId);
      await sleep(100);
      return text('Reconnection test completed successfully. If you received this, the client properly reconnected after stream closure.');
    },
  );
  mcp.registerTool(
    'test_sampling',
    {
      description: 'Tests server-initiated sampling (LLM completion request)',
      inputSchema: { prompt: z.string().describe('The prompt to send to the LLM') },
    },
    async ({ prompt }) => {
      try {
        const result = await server.createMessage({
          messages: [{ role: 'user', content: { type: 'text', text: prompt } }],
          maxTokens: 100,
        });
        const answer = result.content?.text ?? 'No response';
        return text(`LLM response: ${answer}`);
      } catch (error) {
        return text(`Sampling not supported or error: ${error.message}`);
      }
    },
  );
  mcp.registerTool(
    'test_elicitation',
    {
      description: 'Tests server-initiated elicitation (user input request)',
      inputSchema: { message: z.string().describe('The message to show the user') },
    },
    async ({ message }) =>
      elicit(
        {
          mode: 'form',
          message,
          requestedSchema: {
            type: 'object',
            properties: { response: { type: 'string', description: "User's response" } },
            required: ['response'],
          },
        },
        'User response',
      ),
  );
  mcp.registerTool(
    'test_elicitation_sep1034_defaults',
    { description: 'Tests elicitation with default values per SEP-1034', inputSchema: {} },
    async () =>
      elicit(
        { mode: 'form', message: 'Please review and update the form fields with defaults', requestedSchema: FORM_SCHEMA_DEFAULTS },
        'Elicitation completed',
      ),
  );
  mcp.registerTool(
    'test_elicitation_sep1330_enums',
    { description: 'Tests elicitation with enum schema improvements per SEP-1330', inputSchema: {} },
    async () =>
      elicit(
        { mode: 'form', message: 'Please select options from the enum fields', requestedSchema: FORM_SCHEMA_ENUMS },
        'Elicitation completed',
      ),
  );
  mcp.registerTool(
    'json_schema_2020_12_tool',
    {
      description: 'Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)',
      inputSchema: {
        name: z.string().optional(),
        address: z.object({ street: z.string().optional(), city: z.string().optional() }).optional(),
      },
    },
    async (args) => text(`JSON Schema 2020-12 tool called with: ${JSON.stringify(args)}`),
  );

  // ---- the 2026-07-28 suite's diagnostic tools (server-stateless, http-custom-header-server-validation) ----
  // This server speaks 2025-11-25; behind the gateway, a 2026-07-28 client reaches them through the gateway's
  // face, which must then do what the suite checks (relay as input_required, filter logs by the request's
  // logLevel, refuse a client without the capability a tool needs, validate Mcp-Param-* headers).
  mcp.registerTool(
    'test_logging_tool',
    { description: 'Sends one log notification while it runs', inputSchema: {} },
    async (_args, { sendNotification }) => {
      await sendNotification({ method: 'notifications/message', params: { level: 'info', data: 'test_logging_tool ran' } });
      return text('logged');
    },
  );
  mcp.registerTool(
    'test_streaming_elicitation',
    { description: 'Asks the client for input (elicitation) while it runs', inputSchema: {} },
    async () =>
      elicit(
        {
          mode: 'form',
          message: 'Please confirm',
          requestedSchema: { type: 'object', properties: { confirm: { type: 'boolean' } }, required: [] },
        },
        'Elicitation completed',
      ),
  );
  mcp.registerTool(
    'test_missing_capability',
    { description: 'Needs the client to sample; fails with the error it got when the client cannot', inputSchema: {} },
    async () => text('unreachable: answered by the tools/call handler below'),
  );
  mcp.registerTool(
    'test_header_param',
    {
      description: "Echoes its region argument, which the client mirrors into the Mcp-Param-Region header",
      inputSchema: { region: z.string().describe('A region name') },
    },
    async ({ region }) => text(`region: ${region}`),
  );

  // tools/list: the SDK's own listing, except for the raw schemas a zod-derived one would not keep:
  // json_schema_2020_12_tool's 2020-12 schema ($schema, $defs, additionalProperties) and
  // test_header_param's x-mcp-header annotation.
  const listTools = server._requestHandlers.get('tools/list');
  server.setRequestHandler(types.ListToolsRequestSchema, async (request, extra) => {
    const listed = await listTools(request, extra);
    return {
      ...listed,
      tools: listed.tools.map((tool) => {
        if (tool.name === 'json_schema_2020_12_tool') return { ...tool, inputSchema: JSON_SCHEMA_2020_12 };
        if (tool.name === 'test_header_param') {
          const region = { ...tool.inputSchema.properties.region, 'x-mcp-header': 'Region' };
          return { ...tool, inputSchema: { ...tool.inputSchema, properties: { region } } };
        }
        return tool;
      }),
    };
  });

  // tools/call of test_missing_capability: a tool error would be a result; this one must be a JSON-RPC
  // error carrying the code the sampling request failed with (-32021 where the client lacks sampling).
  const callTool = server._requestHandlers.get('tools/call');
  server.setRequestHandler(types.CallToolRequestSchema, async (request, extra) => {
    if (request.params.name !== 'test_missing_capability') return callTool(request, extra);
    if (!server.getClientCapabilities()?.sampling) {
      throw new types.McpError(-32021, 'test_missing_capability needs the sampling capability');
    }
    try {
      const result = await server.createMessage({
        messages: [{ role: 'user', content: { type: 'text', text: 'ping' } }],
        maxTokens: 10,
      });
      return text(`sampled: ${result.content?.text ?? ''}`);
    } catch (error) {
      throw new types.McpError(typeof error.code === 'number' ? error.code : -32603, error.message);
    }
  });

  // ---- resources ----
  mcp.registerResource(
    'static-text',
    'test://static-text',
    { title: 'Static Text Resource', description: 'A static text resource for testing', mimeType: 'text/plain' },
    async () => ({
      contents: [{ uri: 'test://static-text', mimeType: 'text/plain', text: 'This is the content of the static text resource.' }],
    }),
  );
  mcp.registerResource(
    'static-binary',
    'test://static-binary',
    { title: 'Static Binary Resource', description: 'A static binary resource (image) for testing', mimeType: 'image/png' },
    async () => ({ contents: [{ uri: 'test://static-binary', mimeType: 'image/png', blob: PNG }] }),
  );
  mcp.registerResource(
    'template',
    new ResourceTemplate('test://template/{id}/data', { list: undefined }),
    { title: 'Resource Template', description: 'A resource template with parameter substitution', mimeType: 'application/json' },
    async (uri, { id }) => ({
      contents: [
        {
          uri: uri.toString(),
          mimeType: 'application/json',
          text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` }),
        },
      ],
    }),
  );
  mcp.registerResource(
    'watched-resource',
    'test://watched-resource',
    { title: 'Watched Resource', description: 'A resource clients may subscribe to', mimeType: 'text/plain' },
    async () => ({ contents: [{ uri: 'test://watched-resource', mimeType: 'text/plain', text: 'Watched resource content' }] }),
  );
  const subscriptions = new Set();
  server.setRequestHandler(types.SubscribeRequestSchema, async (request) => {
    subscriptions.add(request.params.uri);
    return {};
  });
  server.setRequestHandler(types.UnsubscribeRequestSchema, async (request) => {
    subscriptions.delete(request.params.uri);
    return {};
  });

  // ---- prompts ----
  mcp.registerPrompt('test_simple_prompt', { title: 'Simple Test Prompt', description: 'A simple prompt without arguments' }, async () => ({
    messages: [{ role: 'user', content: { type: 'text', text: 'This is a simple prompt for testing.' } }],
  }));
  mcp.registerPrompt(
    'test_prompt_with_arguments',
    {
      title: 'Prompt With Arguments',
      description: 'A prompt with required arguments',
      argsSchema: { arg1: z.string().describe('First test argument'), arg2: z.string().describe('Second test argument') },
    },
    async ({ arg1, arg2 }) => ({
      messages: [{ role: 'user', content: { type: 'text', text: `Prompt with arguments: arg1='${arg1}', arg2='${arg2}'` } }],
    }),
  );
  mcp.registerPrompt(
    'test_prompt_with_embedded_resource',
    {
      title: 'Prompt With Embedded Resource',
      description: 'A prompt that includes an embedded resource',
      argsSchema: { resourceUri: z.string().describe('URI of the resource to embed') },
    },
    async ({ resourceUri }) => ({
      messages: [
        {
          role: 'user',
          content: { type: 'resource', resource: { uri: resourceUri, mimeType: 'text/plain', text: 'Embedded resource content for testing.' } },
        },
        { role: 'user', content: { type: 'text', text: 'Please process the embedded resource above.' } },
      ],
    }),
  );
  mcp.registerPrompt('test_prompt_with_image', { title: 'Prompt With Image', description: 'A prompt that includes image content' }, async () => ({
    messages: [
      { role: 'user', content: { type: 'image', data: PNG, mimeType: 'image/png' } },
      { role: 'user', content: { type: 'text', text: 'Please analyze the image above.' } },
    ],
  }));

  // ---- logging and completion ----
  server.setRequestHandler(types.SetLevelRequestSchema, async () => ({}));
  server.setRequestHandler(types.CompleteRequestSchema, async () => ({
    completion: { values: [], total: 0, hasMore: false },
  }));

  return mcp;
}

// ---- HTTP ----

function hostname(value) {
  try {
    return new URL(value.includes('://') ? value : `http://${value}`).hostname;
  } catch {
    return undefined;
  }
}

function loopbackOnly(req) {
  const host = hostname(req.headers.host ?? '');
  if (!LOOPBACK_NAMES.has(host)) return false;
  const origin = req.headers.origin;
  return origin === undefined || LOOPBACK_NAMES.has(hostname(origin));
}

function sendJson(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
}

const rpcError = (code, message) => ({ jsonrpc: '2.0', error: { code, message }, id: null });

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

const transports = new Map(); // session id -> transport

async function handle(req, res) {
  const url = new URL(req.url ?? '/', 'http://127.0.0.1');
  if (url.pathname !== '/mcp') return sendJson(res, 404, rpcError(-32000, 'Not found'));
  if (!loopbackOnly(req)) return sendJson(res, 403, rpcError(-32000, 'Host or Origin not allowed'));

  const sessionId = req.headers['mcp-session-id'];
  const existing = typeof sessionId === 'string' ? transports.get(sessionId) : undefined;

  if (req.method !== 'POST') {
    if (!existing) return sendJson(res, sessionId ? 404 : 400, rpcError(-32000, 'Invalid or missing session ID'));
    return existing.handleRequest(req, res);
  }

  let body;
  try {
    body = await readJson(req);
  } catch {
    return sendJson(res, 400, rpcError(-32700, 'Parse error'));
  }
  if (existing) return existing.handleRequest(req, res, body);
  if (sessionId) return sendJson(res, 404, rpcError(-32001, 'Session not found'));
  if (!types.isInitializeRequest(body)) return sendJson(res, 400, rpcError(-32000, 'Invalid or missing session ID'));

  const mcp = buildServer(transports);
  const transport = new StreamableHTTPServerTransport({
    sessionIdGenerator: () => randomUUID(),
    eventStore: eventStore(),
    retryInterval: 1000,
    onsessioninitialized: (id) => transports.set(id, transport),
  });
  transport.onclose = () => {
    if (transport.sessionId) transports.delete(transport.sessionId);
    mcp.close().catch(() => {});
  };
  await mcp.connect(transport);
  return transport.handleRequest(req, res, body);
}

const httpServer = createServer((req, res) => {
  handle(req, res).catch((error) => {
    process.stderr.write(`ts_fixture: ${error?.stack ?? error}\n`);
    if (!res.headersSent) sendJson(res, 500, rpcError(-32603, 'Internal error'));
    else res.end();
  });
});

const port = portFromArgs();
httpServer.listen(port, HOST, () => {
  process.stderr.write(`ts_fixture listening on http://${HOST}:${port}/mcp\n`);
});

const stop = () => {
  for (const transport of transports.values()) transport.close().catch(() => {});
  httpServer.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
