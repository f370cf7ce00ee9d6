// An official x402 express seller (@x402/express) as a test peer of the sidecar, driven by
// tests/interop.rs: POST /x402 priced on the devnet, verified and settled by an HTTP facilitator
// (the official Python one, or the sidecar's facilitator service).
//
//   node seller.mjs --port N --facilitator-url URL --pay-to 0x… [--price '$0.01']
import express from "express";
import { parseArgs } from "node:util";
import { paymentMiddleware, x402ResourceServer } from "@x402/express";
import { ExactEvmScheme } from "@x402/evm/exact/server";
import { HTTPFacilitatorClient } from "@x402/core/server";

const { values } = parseArgs({
  options: {
    port: { type: "string" },
    "facilitator-url": { type: "string" },
    "pay-to": { type: "string" },
    price: { type: "string", default: "$0.01" },
    network: { type: "string", default: "eip155:84532" },
  },
});
if (!values.port || !values["facilitator-url"] || !values["pay-to"]) {
  console.error("seller.mjs: --port, --facilitator-url and --pay-to are required");
  process.exit(2);
}
const network = values.network;
const facilitator = new HTTPFacilitatorClient({ url: values["facilitator-url"] });
const server = new x402ResourceServer(facilitator).register(network, new ExactEvmScheme());
const app = express();
app.use(express.json());
app.use(
  paymentMiddleware(
    {
      "POST /x402": {
        accepts: {
          scheme: "exact",
          price: values.price,
          network,
          payTo: values["pay-to"],
          maxTimeoutSeconds: 120,
        },
        description: "Trading strategy advice",
      },
    },
    server,
  ),
);
app.post("/x402", (_req, res) => {
  res.json({
    strategy: {
      summary: "INTEROP TEST ANSWER: hold",
      steps: [],
      riskNotes: ["A fixed answer of an interop test peer, not trading advice."],
      actions: [],
      confidence: 0.0,
    },
    metadata: { model: "official-express-seller" },
  });
});
app.listen(Number(values.port), "127.0.0.1");
