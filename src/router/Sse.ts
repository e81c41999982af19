/**
 * A light framer for server-sent events over Node buffers: it forwards whole events only, holding
 * back a partial one until its blank line arrives. When an upstream dies mid-event, the client then
 * never receives half an event followed by the router's error event.
 */
import type { ChunkWriter } from "../providers/Upstream.js"

/** Past this, held-back bytes are forwarded anyway: the body is evidently not SSE. */
export const maxHeldBack = 1024 * 1024

const LF = 0x0a
const CR = 0x0d

/**
 * The offset just past the last event boundary, or -1 when there is none. An event ends at a blank
 * line, and SSE lets a line end in `\r\n`, `\n` or a bare `\r` (some servers use the last), so a
 * boundary is any line ending that directly follows another. A `\r` that ends the buffer after a
 * `\n` may be the first half of a `\r\n` still to come, so it waits for the next byte; `\r\r` at
 * the end cannot begin anything but another line and counts at once.
 */
export const lastEventEnd = (buf: Uint8Array): number => {
  for (let i = buf.length - 1; i > 0; i--) {
    const c = buf[i]
    if (c === LF) {
      const before = buf[i - 1]
      if (before === LF) return i + 1
      if (before === CR && i > 1 && (buf[i - 2] === LF || buf[i - 2] === CR)) return i + 1
    } else if (c === CR && buf[i + 1] !== LF) {
      const before = buf[i - 1]
      if (before === CR || (before === LF && i + 1 < buf.length)) return i + 1
    }
  }
  return -1
}

/**
 * The start of a stream, held until its commit point: the chunks as they came (joined once, when
 * they are passed on) and the whole events not judged yet. Each chunk is looked at once, so a long
 * preamble, or one large first event arriving in many chunks, costs time in proportion to its size.
 */
export class HeldStart {
  private readonly chunks: Array<Uint8Array> = []
  /** Bytes held. */
  size = 0
  /** Bytes of whole events handed out for judging. */
  judged = 0
  /** What follows the last whole event handed out: an event still arriving. */
  private rest: Array<Uint8Array> = []
  private restSize = 0
  /** The last bytes seen, for a boundary split across chunks. */
  private tail: Uint8Array = new Uint8Array(0)

  /** Holds a chunk; returns the whole events it completed, or null when it completed none. */
  add(chunk: Uint8Array): Uint8Array | null {
    this.chunks.push(chunk)
    this.size += chunk.byteLength
    this.rest.push(chunk)
    this.restSize += chunk.byteLength
    const tail = this.tail
    const window = tail.byteLength === 0 ? chunk : Buffer.concat([tail, chunk])
    this.tail = Buffer.from(window.subarray(Math.max(0, window.byteLength - 3)))
    const end = lastEventEnd(window)
    // A boundary inside the tail alone was found with the chunk before.
    if (end === -1 || end < tail.byteLength) return null
    const whole = this.restSize - (window.byteLength - end)
    if (whole <= 0) return null
    const all = this.rest.length === 1 ? this.rest[0]! : Buffer.concat(this.rest, this.restSize)
    this.restSize -= whole
    this.rest = this.restSize === 0 ? [] : [all.subarray(whole)]
    this.judged += whole
    return all.subarray(0, whole)
  }

  /** Everything held, in one piece. */
  bytes(): Uint8Array {
    return this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size)
  }
}

/** An event stream's text with every line ending made `\n`, for reading its events. */
export const normalizeLines = (text: string): string => (text.includes("\r") ? text.replace(/\r\n?/g, "\n") : text)

export interface FramedWriter extends ChunkWriter {
  /** Forwards whatever is held back (at a clean end of the body). */
  readonly flush: () => void
}

export const framed = (writer: ChunkWriter): FramedWriter => {
  let held: Buffer | null = null
  return {
    onDrain: writer.onDrain,
    write: (chunk) => {
      const buf: Uint8Array = held === null ? chunk : Buffer.concat([held, chunk])
      const end = lastEventEnd(buf)
      if (end === -1 && buf.length < maxHeldBack) {
        held = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
        return true
      }
      const cut = end === -1 ? buf.length : end
      held = cut === buf.length ? null : Buffer.from(buf.buffer, buf.byteOffset + cut, buf.byteLength - cut)
      return writer.write(cut === buf.length ? buf : buf.subarray(0, cut))
    },
    flush: () => {
      if (held !== null) {
        writer.write(held)
        held = null
      }
    }
  }
}
