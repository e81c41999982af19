/**
 * Test kit, also shipped for users testing their own routing without a network: the in-memory
 * fake `Upstream` Layer, the scripted HTTP fake provider, and the answer builders both use.
 */
export * as FakeUpstream from "./testing/FakeUpstream.js"
export { type FakeServer, type FakeServerOptions, type FakeServerRequest, startFakeServer } from "./testing/FakeServer.js"
export * as FakeScript from "./testing/Script.js"
export type { FakeBehaviour } from "./testing/Script.js"
