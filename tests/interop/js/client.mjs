// The official x402 TypeScript client (@x402/fetch + @x402/evm, a viem account) as a test peer
// of the sidecar, driven by tests/interop.rs: pay one paid route and print one JSON line with
// the status, the decoded PAYMENT-RESPONSE and the body.
//
//   X402_PEER_KEY=0x… node client.mjs --url http://127.0.0.1:PORT/x402 [--body FILE]
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { decodePaymentResponseHeader, wrapFetchWithPayment, x402Client } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";

const { values } = parseArgs({ options: { url: { type: "string" }, body: { type: "string" } } });
const key = process.env.X402_PEER_KEY;
if (!values.url || !key) {
  console.error("client.mjs: --url and X402_PEER_KEY are required");
  process.exit(2);
}
const account = privateKeyToAccount(key);
const client = new x402Client().register("eip155:*", new ExactEvmScheme(account));
const paying = wrapFetchWithPayment(fetch, client);
const body = values.body ? readFileSync(values.body, "utf8") : "{}";
const resp = await paying(values.url, {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body,
});
const header = resp.headers.get("PAYMENT-RESPONSE");
const text = await resp.text();
let parsed;
try {
  parsed = JSON.parse(text);
} catch {
  parsed = text;
}
console.log(
  JSON.stringify({
    status: resp.status,
    receipt: header ? { ...decodePaymentResponseHeader(header), header: "PAYMENT-RESPONSE" } : null,
    body: parsed,
  }),
);
