// A TypeScript program against the package's generated declarations: compiled with
// `tsc --noEmit` by tests/unit/client/test_js_package.py, so a change to the client's
// public API that breaks typed users fails the suite.
import { CloseCode, RealtimeClient, RealtimeError, type Subscription } from "realtime-ws-client";

type ChatMessage = { id: string | null; sender: { id: number; username: string }; text: string; ts: string };

export async function joinRoom(token: string, room: string, show: (message: ChatMessage) => void): Promise<number> {
  const client = new RealtimeClient("wss://chat.example.com/ws/", {
    token,
    tokenProvider: async () => token,
    ackTimeout: 5000,
  });
  client.onStateChange((before, after) => console.log(`connection ${before} -> ${after}`));
  client.onPush((frame) => {
    if (frame.event === "system.announcement") console.log("announcement", frame.data);
  });
  const sub: Subscription = client.subscribe(`room:${room}`, {
    onEvent: (frame) => show(frame.data as ChatMessage),
    onEnd: (error: RealtimeError | null) => {
      if (error?.code === "not_recovered") console.log("reload the room");
    },
  });
  await sub.ready;
  try {
    const ack = await client.call("message.send", { stream: `room:${room}`, text: "hello" });
    return Number(ack.offset);
  } catch (error) {
    if (error instanceof RealtimeError) console.log(error.code, CloseCode.SLOW_CONSUMER);
    throw error;
  } finally {
    client.close();
  }
}
