// The bare pass-through the router is compared with: node:http in, undici Pool out, body bytes
// forwarded untouched, no parsing, no policy. What a proxy costs before it does anything useful.
import { createServer } from "node:http"
import { Pool } from "undici"

const upstream = new Pool(`http://127.0.0.1:${process.env.UPSTREAM_PORT}`, { connections: 128, pipelining: 1 })

const server = createServer((req, res) => {
  const chunks = []
  req.on("data", (c) => chunks.push(c))
  req.on("end", () => {
    upstream.request({
      method: "POST",
      path: req.url,
      headers: { "content-type": "application/json" },
      body: Buffer.concat(chunks)
    }).then(async (r) => {
      const body = Buffer.from(await r.body.arrayBuffer())
      res.writeHead(r.statusCode, { "content-type": "application/json", "content-length": body.length })
      res.end(body)
    }, () => {
      res.writeHead(502)
      res.end()
    })
  })
})
server.keepAliveTimeout = 60_000
server.listen(0, "127.0.0.1", () => process.send?.({ port: server.address().port }))
