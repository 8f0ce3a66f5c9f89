// A flow webhook receiver in Node.js, using only the standard library.
//
//   WEBHOOK_SECRET=my-secret PORT=8000 node node_receiver.js
//
// It verifies X-Webhook-Signature (t=<unix ms>,sha256=<hex>[,sha256=<hex>...]) over the exact
// body (POST/PUT/PATCH) or the full URL (GET/DELETE), rejects timestamps more than five
// minutes away, and answers 200 or 401. It logs one JSON line per request.
"use strict";
const crypto = require("crypto");
const http = require("http");

const secret = process.env.WEBHOOK_SECRET;
const toleranceMs = 5 * 60 * 1000;
if (!secret) throw new Error("set WEBHOOK_SECRET");

function verify(header, payload) {
  const parts = String(header || "").split(",").map((part) => part.split("="));
  const timestamp = (parts.find(([key]) => key === "t") || [])[1];
  const signatures = parts.filter(([key]) => key === "sha256").map(([, value]) => value.toLowerCase());
  if (!/^\d+$/.test(timestamp || "") || signatures.length === 0) return "malformed header";
  if (Math.abs(Date.now() - Number(timestamp)) > toleranceMs) return "stale timestamp";
  const expected = crypto.createHmac("sha256", secret).update(`${timestamp}.`).update(payload).digest("hex");
  const match = signatures.some(
    (signature) =>
      signature.length === expected.length && crypto.timingSafeEqual(Buffer.from(signature), Buffer.from(expected)),
  );
  return match ? null : "signature mismatch";
}

const server = http.createServer((request, response) => {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    const body = Buffer.concat(chunks);
    const payload = ["POST", "PUT", "PATCH"].includes(request.method)
      ? body
      : Buffer.from(`http://${request.headers.host}${request.url}`);
    const problem = verify(request.headers["x-webhook-signature"], payload);
    console.log(JSON.stringify({ id: request.headers["x-webhook-id"], valid: problem === null, problem }));
    response.writeHead(problem === null ? 200 : 401, { "Content-Type": "text/plain" });
    response.end(problem === null ? "ok" : problem);
  });
});

server.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  console.log(JSON.stringify({ listening: server.address().port }));
});
