// Does the TypeScript MCP SDK accept this result? Reads {"schema": "<a schema of its types.js>", "result": {...}}
// on stdin; exits 0 if that schema parses the result, 1 with the issues on stdout if not. For the tests that
// check what the gateway relays against a client written by others (its zod schemas are stricter than the
// Python SDK's: null for an optional field is refused).
import * as types from "@modelcontextprotocol/sdk/types.js";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { schema, result } = JSON.parse(input);
const parsed = types[schema].safeParse(result);
if (!parsed.success) {
  console.log(JSON.stringify(parsed.error.issues).slice(0, 2000));
  process.exit(1);
}
