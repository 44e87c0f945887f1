/**
 * A byte-level server-sent-events splitter: bytes in, whole events out, each
 * event as its exact bytes (including the blank line that ends it), so a relay
 * can pass them on unchanged.
 *
 * Line ends may be LF, CRLF or a lone CR (the SSE grammar). A CR at the very
 * end of the buffered bytes is ambiguous (it may be the first half of a CRLF),
 * so the splitter waits for the next byte before deciding.
 *
 * @internal
 */

const LF = 0x0a
const CR = 0x0d

/** @internal */
export interface RawEvent {
  /** The event's exact bytes, terminating blank line included. */
  readonly bytes: Uint8Array
  /** The `data:` lines joined with "\n"; `undefined` when the event has none (a comment, a keep-alive). */
  readonly data: string | undefined
}

const decoder = new TextDecoder()

/** Parses the fields of one event's text (the SSE field grammar; only `data` is kept). */
export const eventData = (text: string): string | undefined => {
  let data: Array<string> | undefined
  for (const line of text.split(/\r\n|\r|\n/)) {
    if (line === "" || line.startsWith(":")) continue
    const colon = line.indexOf(":")
    const field = colon === -1 ? line : line.slice(0, colon)
    if (field !== "data") continue
    let value = colon === -1 ? "" : line.slice(colon + 1)
    if (value.startsWith(" ")) value = value.slice(1)
    ;(data ??= []).push(value)
  }
  return data?.join("\n")
}

/** @internal */
export class SseSplitter {
  private buffer: Uint8Array = new Uint8Array(0)
  /** Where the scan resumes (everything before it holds no event end). */
  private scanFrom = 0
  /** Whether the line being scanned has no bytes yet. */
  private lineEmpty = true

  /** Feeds bytes; returns the events completed by them, in order. */
  push(chunk: Uint8Array): Array<RawEvent> {
    if (chunk.length === 0) return []
    const merged = new Uint8Array(this.buffer.length + chunk.length)
    merged.set(this.buffer, 0)
    merged.set(chunk, this.buffer.length)
    this.buffer = merged
    return this.drain(false)
  }

  /** The stream ended: returns a last event left without its blank line, if any. */
  end(): Array<RawEvent> {
    const events = this.drain(true)
    if (this.buffer.length > 0) {
      const bytes = this.buffer
      this.buffer = new Uint8Array(0)
      this.scanFrom = 0
      const text = decoder.decode(bytes)
      if (text.trim().length > 0) events.push({ bytes, data: eventData(text) })
    }
    return events
  }

  private drain(final: boolean): Array<RawEvent> {
    const events: Array<RawEvent> = []
    const buf = this.buffer
    let start = 0
    let i = this.scanFrom
    let lineEmpty = this.lineEmpty
    while (i < buf.length) {
      const b = buf[i]!
      if (b === LF || b === CR) {
        let end = i + 1
        if (b === CR) {
          if (i + 1 >= buf.length && !final) break // wait: CR or CRLF?
          if (buf[i + 1] === LF) end = i + 2
        }
        if (lineEmpty) {
          // a blank line: the event ends here (a blank line with nothing before it is skipped)
          const bytes = buf.slice(start, end)
          const text = decoder.decode(bytes)
          // blank lines with no event before them stay attached to the next event (no byte is lost)
          if (text.trim().length > 0) {
            events.push({ bytes, data: eventData(text) })
            start = end
          }
        }
        lineEmpty = true
        i = end
      } else {
        lineEmpty = false
        i++
      }
    }
    this.buffer = buf.slice(start)
    this.scanFrom = i - start
    this.lineEmpty = lineEmpty
    return events
  }
}
