/**
 * A light framer for server-sent events over Node buffers: it forwards whole events only, holding
 * back a partial one until its blank line arrives. When an upstream dies mid-event, the client then
 * never receives half an event followed by the router's error event.
 */
import type { ChunkWriter } from "../providers/Upstream.js"

/** Past this, held-back bytes are forwarded anyway: the body is evidently not SSE. */
const maxHeldBack = 1024 * 1024

const NL = 0x0a

/** The offset just past the last event boundary (`\n\n` or `\n\r\n`), or -1 when there is none. */
export const lastEventEnd = (buf: Uint8Array): number => {
  for (let i = buf.length - 1; i > 0; i--) {
    if (buf[i] !== NL) continue
    if (buf[i - 1] === NL) return i + 1
    if (buf[i - 1] === 0x0d && i > 1 && buf[i - 2] === NL) return i + 1
  }
  return -1
}

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
