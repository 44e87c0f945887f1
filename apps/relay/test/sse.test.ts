import { describe, expect, it } from "vitest"
import { eventData, SseSplitter } from "../src/internal/sse.js"

const encoder = new TextEncoder()
const decoder = new TextDecoder()

const feed = (pieces: ReadonlyArray<string>) => {
  const splitter = new SseSplitter()
  const events = pieces.flatMap((p) => splitter.push(encoder.encode(p)))
  return { events, tail: splitter.end() }
}

describe("internal/sse splitter", () => {
  it("splits LF, CRLF and CR-terminated events, keeping their exact bytes", () => {
    const input = "data: a\n\ndata: b\r\n\r\n: comment\n\ndata: c\r\rdata: d1\ndata: d2\n\n"
    const { events, tail } = feed([input])
    expect(events.map((e) => decoder.decode(e.bytes)).join("")).toBe(input)
    expect(events.map((e) => e.data)).toEqual(["a", "b", undefined, "c", "d1\nd2"])
    expect(tail).toEqual([])
  })

  it("handles events split across chunks at every byte, including between CR and LF", () => {
    const input = "data: {\"x\":1}\r\n\r\ndata: [DONE]\r\n\r\n"
    for (let cut = 1; cut < input.length; cut++) {
      const { events } = feed([input.slice(0, cut), input.slice(cut)])
      expect(events.map((e) => e.data)).toEqual(["{\"x\":1}", "[DONE]"])
      expect(events.map((e) => decoder.decode(e.bytes)).join("")).toBe(input)
    }
  })

  it("emits nothing before the blank line; a last event without one comes out at the end", () => {
    const splitter = new SseSplitter()
    expect(splitter.push(encoder.encode("data: partial\n"))).toEqual([])
    const tail = splitter.end()
    expect(tail.map((e) => e.data)).toEqual(["partial"])
  })

  it("reads the data field per the SSE grammar", () => {
    expect(eventData("data:x\ndata:  y\nevent: e\nid: 1")).toBe("x\n y")
    expect(eventData(": only a comment")).toBeUndefined()
    expect(eventData("data")).toBe("")
  })
})
