// A Sparkplug B edge node played by Eclipse Tahu's client (npm sparkplug-client), for Pusat's
// tests: `node edge.js scenario.json`. The scenario names the broker, group and node, and lists
// steps run in order once the client is connected:
//   {"do": "nbirth" | "ndata", "payload": {...}}          Tahu adds seq (and bdSeq to births)
//   {"do": "dbirth" | "ddata" | "ddeath", "device": "D", "payload": {...}}
//   {"do": "skip_seq"}        the next message's seq skips one, as if a message were lost
//   {"do": "await_rebirth"}   wait for an NCMD Node Control/Rebirth from the host
//   {"do": "stop"}            disconnect, publishing the NDEATH
// Each step done is printed as a line "done <i> <do>", so a test can follow along.
"use strict";
const fs = require("fs");
const sparkplug = require("sparkplug-client");

const scenario = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const client = sparkplug.newClient({
  serverUrl: scenario.serverUrl,
  username: "",
  password: "",
  groupId: scenario.groupId,
  edgeNode: scenario.edgeNode,
  clientId: scenario.clientId,
  publishDeath: true,
  version: "spBv1.0",
});

let rebirths = 0; // NCMD rebirth requests received
let waiting = null; // resolves the await_rebirth step
client.on("ncmd", (payload) => {
  if ((payload.metrics || []).some((m) => m.name === "Node Control/Rebirth" && m.value)) {
    rebirths += 1;
    console.log("ncmd rebirth");
    if (waiting) waiting();
  }
});

function rebirth() {
  return new Promise((resolve) => {
    if (rebirths > 0) { rebirths -= 1; resolve(); return; }
    waiting = () => { waiting = null; rebirths -= 1; resolve(); };
  });
}

async function run() {
  const steps = scenario.steps;
  for (let i = 0; i < steps.length; i++) {
    const s = steps[i];
    switch (s.do) {
      case "nbirth": client.publishNodeBirth(s.payload); break;
      case "ndata": client.publishNodeData(s.payload); break;
      case "dbirth": client.publishDeviceBirth(s.device, s.payload); break;
      case "ddata": client.publishDeviceData(s.device, s.payload); break;
      case "ddeath": client.publishDeviceDeath(s.device, s.payload); break;
      case "skip_seq": client.incrementSeqNum(); break;
      case "await_rebirth": await rebirth(); break;
      case "stop": client.stop(); break;
      default: throw new Error("unknown step " + s.do);
    }
    console.log("done " + i + " " + s.do);
  }
}

let started = false;
client.on("birth", () => {
  if (started) return; // a reconnect: the scenario runs once
  started = true;
  run().then(
    () => setTimeout(() => process.exit(0), 200),
    (e) => { console.error(e); process.exit(1); },
  );
});
client.on("error", (e) => { console.error("mqtt error", e); process.exit(2); });
