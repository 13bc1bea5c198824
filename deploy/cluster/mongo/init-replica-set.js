// One-shot init of the replica set rs0 (deploy/cluster/docker-compose.yml, service mongo-init).
// Runs in mongo-1's network namespace, so it reaches mongo-1 on 127.0.0.1 and MongoDB's localhost
// exception lets it initiate the set and create the first user before any user exists.
// Idempotent: an initiated set is left as it is; once the root user exists the exception is closed
// and createUser is refused (Unauthorized), which means it is there.
const SET = "rs0";
const MEMBERS = ["mongo-1:27017", "mongo-2:27017", "mongo-3:27017"];
const WAIT_MS = 120000;

function hello() {
  return db.adminCommand({ hello: 1 });
}

if (!hello().setName) {
  // mongo-1 is preferred as primary, so the first user can be made here through the localhost exception
  const members = MEMBERS.map((host, i) => ({ _id: i, host: host, priority: i === 0 ? 2 : 1 }));
  const config = { _id: SET, members: members };
  printjson(rs.initiate(config));
} else {
  print(`replica set ${hello().setName} already initiated`);
}

const deadline = Date.now() + WAIT_MS;
while (!hello().isWritablePrimary) {
  if (Date.now() > deadline) {
    throw new Error(`mongo-1 did not become primary of ${SET} within ${WAIT_MS / 1000} s`);
  }
  sleep(500);
}

const user = process.env.MONGO_ROOT_USER;
const pwd = process.env.MONGO_ROOT_PASSWORD;
if (!user || !pwd) {
  throw new Error("MONGO_ROOT_USER and MONGO_ROOT_PASSWORD are required");
}
try {
  db.getSiblingDB("admin").createUser({ user: user, pwd: pwd, roles: [{ role: "root", db: "admin" }] });
  print(`root user ${user} created`);
} catch (e) {
  if (e.code !== 13 && e.code !== 51003) {
    throw e;
  }
  print(`root user exists (${e.codeName})`);
}
