// Drives the official MCP TypeScript SDKs against a Switchyard MCP endpoint.
//
//   node client.mjs <sdk> <url> <api-key> <tool> <arguments-json> [<give-up-ms>]
//
// <sdk>: "v1" (@modelcontextprotocol/sdk, the initialize handshake), "v2-legacy"
// (@modelcontextprotocol/client, handshake) or "v2-modern" (the same client pinned to
// the stateless 2026-07-28 revision). Prints one JSON object: the protocol version the
// client settled on, the tools it listed, and what the call, a call of an unknown tool
// and a call claiming another tenant gave: {result} or {error} (what the SDK raised).
// With <give-up-ms>, it only calls the tool with that request timeout (the SDK gives up
// on the call as a host does when a user presses stop) and prints {protocol, call}.
import { Client as ClientV1 } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport as TransportV1 } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const [sdk, url, apiKey, tool, argumentsJson, giveUpMs] = process.argv.slice(2);
const requestInit = { headers: { Authorization: `Bearer ${apiKey}` } };
const info = { name: "switchyard-ts-test", version: "1.0.0" };

let client;
let transport;
if (sdk === "v1") {
  client = new ClientV1(info);
  transport = new TransportV1(new URL(url), { requestInit });
} else {
  const mode = sdk === "v2-modern" ? { pin: "2026-07-28" } : "legacy";
  client = new Client(info, { versionNegotiation: { mode } });
  transport = new StreamableHTTPClientTransport(new URL(url), { requestInit });
}

await client.connect(transport);
const protocol = sdk === "v1" ? transport.protocolVersion : client.getNegotiatedProtocolVersion();
if (giveUpMs) {
  const params = { name: tool, arguments: JSON.parse(argumentsJson) };
  const options = { timeout: Number(giveUpMs) };
  let call;
  try {
    call = { result: await (sdk === "v1" ? client.callTool(params, undefined, options) : client.callTool(params, options)) };
  } catch (error) {
    call = { error: { code: error.code ?? null, message: String(error.message ?? error) } };
  }
  await new Promise((resolve) => setTimeout(resolve, 500)); // the cancellation goes out
  await client.close();
  console.log(JSON.stringify({ protocol, call }));
  process.exit(0);
}
const listed = await client.listTools();
async function attempt(name, args, meta) {
  try {
    return { result: await client.callTool({ name, arguments: args, ...(meta ? { _meta: meta } : {}) }) };
  } catch (error) {
    return { error: { code: error.code ?? null, message: String(error.message ?? error) } };
  }
}
const call = await attempt(tool, JSON.parse(argumentsJson));
const unknown = await attempt("no_such_tool", {});
// A call refused before it runs (here: its _meta claims another tenant).
const claimed = await attempt(tool, JSON.parse(argumentsJson), { "switchyard/tenant_id": "someone-else" });
await client.close();
console.log(JSON.stringify({ protocol, tools: listed.tools.map((t) => t.name), call, unknown, claimed }));
