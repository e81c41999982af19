import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { framed, HeldStart, lastEventEnd, normalizeLines, scanEvents } from "../../src/router/Sse.js"
import { collector } from "./helpers.js"

const bytes = (s: string) => new Uint8Array(Buffer.from(s))

describe("Sse.lastEventEnd", () => {
  it("is -1 without a blank line", () => {
    expect(lastEventEnd(bytes(""))).toBe(-1)
    expect(lastEventEnd(bytes("\n"))).toBe(-1)
    expect(lastEventEnd(bytes("data: a"))).toBe(-1)
    expect(lastEventEnd(bytes("data: a\n"))).toBe(-1)
    expect(lastEventEnd(bytes("data: a\r\n"))).toBe(-1)
    expect(lastEventEnd(bytes("data: a\ndata: b\n"))).toBe(-1)
  })

  it("is the offset just past a \\n\\n boundary", () => {
    expect(lastEventEnd(bytes("\n\n"))).toBe(2)
    expect(lastEventEnd(bytes("data: a\n\n"))).toBe(9)
  })

  it("finds the last boundary, not the first", () => {
    const text = "data: a\n\ndata: b\n\ndata: c"
    expect(lastEventEnd(bytes(text))).toBe(text.indexOf("data: c"))
  })

  it("accepts \\r\\n\\r\\n and \\n\\r\\n boundaries", () => {
    expect(lastEventEnd(bytes("data: a\r\n\r\n"))).toBe(11)
    expect(lastEventEnd(bytes("data: a\r\n\r\ndata: b"))).toBe(11)
    expect(lastEventEnd(bytes("data: a\n\r\n"))).toBe(10)
  })

  it("accepts bare-CR line endings (\\r\\r), which SSE allows", () => {
    expect(lastEventEnd(bytes("data: a\r\r"))).toBe(9)
    expect(lastEventEnd(bytes("data: a\r\rdata: b\r"))).toBe(9)
    expect(lastEventEnd(bytes("data: a\rdata: b\r"))).toBe(-1)
    expect(lastEventEnd(bytes("data: a\r\r\n"))).toBe(10)
    expect(lastEventEnd(bytes("data: a\r\n\rdata: b"))).toBe(10)
  })

  it("waits on a \\r that ends the buffer after a line, since a \\n may complete it", () => {
    expect(lastEventEnd(bytes("data: a\r\n\r"))).toBe(-1)
    expect(lastEventEnd(bytes("data: a\n\r"))).toBe(-1)
    expect(lastEventEnd(bytes("data: a\r\n\r\n"))).toBe(11)
  })
})

/** Where a blank line ends in `text`, read line by line as an SSE client does. */
const boundaries = (text: string): Set<number> => {
  const out = new Set<number>()
  let lineStart = 0
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (c !== "\n" && c !== "\r") continue
    const end = c === "\r" && text[i + 1] === "\n" ? i + 2 : i + 1
    if (i === lineStart && lineStart > 0) out.add(end)
    i = end - 1
    lineStart = end
  }
  return out
}

describe("Sse.framed over every line-ending style", () => {
  const style = fc.constantFrom("\n", "\r\n", "\r")
  const stream = fc.tuple(
    fc.array(fc.array(fc.stringMatching(/^[a-z{}":, ]{0,12}$/), { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 5 }),
    style,
    fc.boolean()
  ).map(([events, eol, mixed]) =>
    events.map((lines, i) => {
      // `mixed`: each event picks its own line ending, as a proxy chain might produce.
      const e = mixed ? ["\n", "\r\n", "\r"][i % 3]! : eol
      return lines.map((l) => `data: ${l}${e}`).join("") + e
    }).join("")
  )

  it("writes only whole events (ending on a blank line) and loses no byte, however the bytes are split", () => {
    fc.assert(
      fc.property(stream, fc.array(fc.nat(), { maxLength: 6 }), (text, cuts) => {
        const at = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b)
        const pieces = [0, ...at, text.length].slice(1).map((end, i, ends) => text.slice(i === 0 ? 0 : ends[i - 1], end))
        const legal = boundaries(text)
        const out: Array<string> = []
        const w = framed({ write: (c) => out.push(Buffer.from(c).toString("latin1")) > 0, onDrain: () => {} })
        for (const p of pieces) if (p.length > 0) w.write(bytes(p))
        let offset = 0
        for (const chunk of out) {
          offset += chunk.length
          expect(legal.has(offset)).toBe(true)
        }
        // The text ends on a blank line, so nothing may wait for a flush: each event goes as soon
        // as its blank line has arrived.
        expect(offset).toBe(text.length)
        w.flush()
        expect(out.join("")).toBe(text)
      }),
      { numRuns: 500 }
    )
  })

  it("HeldStart hands out each whole event once, at a legal boundary, however the bytes are split", () => {
    fc.assert(
      fc.property(stream, fc.array(fc.nat(), { maxLength: 6 }), (text, cuts) => {
        const at = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b)
        const pieces = [0, ...at, text.length].slice(1).map((end, i, ends) => text.slice(i === 0 ? 0 : ends[i - 1], end))
        const legal = boundaries(text)
        const held = new HeldStart()
        let judged = ""
        for (const p of pieces) {
          if (p.length === 0) continue
          const events = held.add(bytes(p))
          if (events !== null) {
            expect(events.byteLength).toBeGreaterThan(0)
            judged += Buffer.from(events).toString("latin1")
            expect(legal.has(judged.length)).toBe(true)
          }
          expect(held.judged).toBe(judged.length)
        }
        expect(judged).toBe(text)
        expect(Buffer.from(held.bytes()).toString("latin1")).toBe(text)
      }),
      { numRuns: 500 }
    )
  })

  it("reads the same events whatever the line endings", () => {
    expect(normalizeLines("data: a\r\rdata: b\r\n\r\ndata: c\n\n")).toBe("data: a\n\ndata: b\n\ndata: c\n\n")
    expect(normalizeLines("data: a\n\n")).toBe("data: a\n\n")
  })
})

describe("Sse.framed", () => {
  it("forwards whole events at once and holds back nothing when a chunk ends on a boundary", () => {
    const out = collector()
    const w = framed(out.writer)
    w.write(bytes("data: 1\n\ndata: 2\n\n"))
    expect(out.chunks.map(String)).toEqual(["data: 1\n\ndata: 2\n\n"])
    w.flush()
    expect(out.chunks).toHaveLength(1)
  })

  it("holds a partial event back until its blank line arrives", () => {
    const out = collector()
    const w = framed(out.writer)
    expect(w.write(bytes("data: {\"a\":"))).toBe(true)
    expect(out.chunks).toEqual([])
    w.write(bytes("1}\n"))
    expect(out.chunks).toEqual([])
    w.write(bytes("\ndata: {\"b\""))
    expect(out.chunks.map(String)).toEqual(["data: {\"a\":1}\n\n"])
    w.write(bytes(":2}\n\n"))
    expect(out.chunks.map(String)).toEqual(["data: {\"a\":1}\n\n", "data: {\"b\":2}\n\n"])
  })

  it("never writes a chunk that ends inside an event", () => {
    const text = "data: one\n\ndata: two\n\ndata: three\n\ndata: [DONE]\n\n"
    // Every split of the text into three pieces.
    for (let i = 1; i < text.length; i++) {
      for (let j = i + 1; j < text.length; j++) {
        const out = collector()
        const w = framed(out.writer)
        for (const piece of [text.slice(0, i), text.slice(i, j), text.slice(j)]) w.write(bytes(piece))
        for (const c of out.chunks) expect(String(c).endsWith("\n\n")).toBe(true)
        expect(out.text()).toBe(text)
      }
    }
  })

  it("splits at \\r\\n\\r\\n boundaries", () => {
    const out = collector()
    const w = framed(out.writer)
    w.write(bytes("data: a\r\n\r\ndata: b\r\n"))
    expect(out.chunks.map(String)).toEqual(["data: a\r\n\r\n"])
    w.write(bytes("\r\n"))
    expect(out.chunks.map(String)).toEqual(["data: a\r\n\r\n", "data: b\r\n\r\n"])
  })

  it("flush forwards what is held back, once", () => {
    const out = collector()
    const w = framed(out.writer)
    w.write(bytes("data: a\n\ndata: tail"))
    expect(out.text()).toBe("data: a\n\n")
    w.flush()
    expect(out.text()).toBe("data: a\n\ndata: tail")
    w.flush()
    expect(out.text()).toBe("data: a\n\ndata: tail")
  })

  it("flush with nothing held writes nothing", () => {
    const out = collector()
    const w = framed(out.writer)
    w.flush()
    expect(out.chunks).toEqual([])
  })

  it("passes the writer's backpressure through and shares its onDrain", () => {
    let resumed = 0
    const w = framed({ write: () => false, onDrain: (resume) => resume() })
    expect(w.write(bytes("data: a\n\n"))).toBe(false)
    w.onDrain(() => resumed++)
    expect(resumed).toBe(1)
  })

  it("forwards a body with no boundary at all once it passes 1 MiB (not SSE)", () => {
    const out = collector()
    const w = framed(out.writer)
    const half = "x".repeat(600 * 1024)
    w.write(bytes(half))
    expect(out.chunks).toEqual([])
    w.write(bytes(half))
    expect(out.text()).toBe(half + half)
  })
})

describe("Sse.HeldStart", () => {
  it("holds an event still arriving, then hands it out whole when its blank line comes", () => {
    const held = new HeldStart()
    expect(held.add(bytes("data: {\"a\""))).toBeNull()
    expect(held.add(bytes(":1}\n"))).toBeNull()
    const events = held.add(bytes("\ndata: {\"b"))
    expect(Buffer.from(events!).toString()).toBe("data: {\"a\":1}\n\n")
    expect(held.judged).toBe(15)
    expect(held.add(bytes("\":2}\n\n"))).not.toBeNull()
    expect(Buffer.from(held.bytes()).toString()).toBe("data: {\"a\":1}\n\ndata: {\"b\":2}\n\n")
  })

  it("hands out what comes before a boundary whose second half begins the next chunk", () => {
    const held = new HeldStart()
    expect(held.add(bytes("data: a\n\r"))).toBeNull()
    expect(Buffer.from(held.add(bytes("\n"))!).toString()).toBe("data: a\n\r\n")
    // A bare \r after \n is a boundary too, known once the byte after it is not \n.
    const other = new HeldStart()
    expect(other.add(bytes("data: a\n\r"))).toBeNull()
    expect(Buffer.from(other.add(bytes("data: b"))!).toString()).toBe("data: a\n\r")
  })
})

describe("Sse.scanEvents (how whole events say an answer ends)", () => {
  const event = (o: unknown) => `data: ${JSON.stringify(o)}\n\n`
  const delta = (content: string, finish: string | null = null, index = 0) => event({ choices: [{ index, delta: { content }, finish_reason: finish }] })

  it("says nothing of a chunk with none of [DONE], a finish or an error event", () => {
    expect(scanEvents(bytes(delta("Hi") + event({ choices: [{ delta: {}, finish_reason: null }] })))).toBeNull()
  })

  it("counts finishes, and finds [DONE] at the start of a data line (not inside content) with where its event ends", () => {
    expect(scanEvents(bytes(delta("Hi", "stop")))).toEqual({ finishes: 1, doneEnd: -1, error: null })
    expect(scanEvents(bytes(delta("a", "stop", 0) + delta("b", "length", 1)))?.finishes).toBe(2)
    const head = delta("Hi", "stop")
    expect(scanEvents(bytes(head + "data:[DONE]\r\n\r\n" + delta("after")))).toEqual({ finishes: 1, doneEnd: head.length + 15, error: null })
    expect(scanEvents(bytes(delta("data: [DONE]\n\n\"finish_reason\": \"stop\"")))).toBeNull()
  })

  it("finds an error event, where it begins, and its message; a string error or a deep one too", () => {
    const before = delta("Hi")
    const seen = scanEvents(bytes(before + event({ error: { message: "crashed", code: 500 } }) + delta("x", "stop") + "data: [DONE]\n\n"))
    // What follows the error event does not count: it is not passed on.
    expect(seen).toEqual({ finishes: 0, doneEnd: -1, error: { at: before.length, message: "crashed" } })
    expect(scanEvents(bytes(event({ error: "model runner stopped" })))?.error?.message).toBe("model runner stopped")
    const deep = "[".repeat(200_000) + "]".repeat(200_000)
    expect(scanEvents(bytes(`data: {"error":{"details":${deep}}}\n\n`))?.error?.message).toBe("an error nested too deeply to quote")
    // A chunk that merely has an `error` member inside its choices is not an error event.
    expect(scanEvents(bytes(event({ choices: [{ delta: { content: "x" }, error: null }] })))).toBeNull()
  })

  it("a choice that finished with \"error\" is an error event, with or without an error beside it; a cut-off finish does not throw", () => {
    const before = delta("Hi")
    const openRouter = event({ error: { code: "server_error", message: "Provider disconnected" }, choices: [{ index: 0, delta: { content: "" }, finish_reason: "error" }] })
    expect(scanEvents(bytes(before + openRouter))).toEqual({ finishes: 0, doneEnd: -1, error: { at: before.length, message: "Provider disconnected" } })
    expect(scanEvents(bytes(before + delta("", "error") + "data: [DONE]\n\n"))).toEqual({ finishes: 0, doneEnd: -1, error: { at: before.length, message: 'finish_reason "error"' } })
    expect(scanEvents(bytes('data: {"choices":[{"finish_reason":"er'))).toEqual({ finishes: 1, doneEnd: -1, error: null })
  })

  it("an error event after [DONE] is not the answer's", () => {
    const answer = delta("Hi", "stop") + "data: [DONE]\n\n"
    expect(scanEvents(bytes(answer + event({ error: "late" })))).toEqual({ finishes: 1, doneEnd: answer.length, error: null })
  })
})
