import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Kafka, logLevel } from 'kafkajs';
import { pino } from 'pino';
import { createPool, type Db } from '../../control-plane/db/pool.js';
import { migrate } from '../../control-plane/db/migrate.js';
import { recordEvent } from '../../control-plane/events/outbox.js';
import { KafkaRelay } from '../../control-plane/relay/kafka.js';
import { ConsulSync, serviceId } from '../../control-plane/relay/consul.js';
import { startTestPostgres, type TestPostgres } from '../helpers/postgres.js';
import { insertApp } from '../helpers/control-plane.js';

/**
 * Relays of the outbox. The "Kafka away" case runs everywhere; publishing to a real broker runs
 * when KAFKA_BROKERS is set, Consul registration when CONSUL_HTTP_ADDR is set (both are in the
 * docker-compose stack), and print a skip reason otherwise.
 */
const log = pino({ level: 'silent' });
let pgs: TestPostgres;
let db: Db;
let userId: number;
let imageId: number;

beforeAll(async () => {
  pgs = await startTestPostgres();
  db = createPool(await pgs.createDatabase(), 4);
  await migrate(db);
  userId = (await db.query(`INSERT INTO users (email, password_hash) VALUES ('relay@example.com', 'x') RETURNING id`)).rows[0].id;
  const host = `relay-${randomBytes(3).toString('hex')}.example.com`;
  await insertApp(db, userId, host);
  imageId = (await db.query(
    `INSERT INTO images (user_id, name, tag, app_hostname, revision, status, docker_image) VALUES ($1, 'relay', 'latest', $2, 1, 'ready', 'berth-relay:latest') RETURNING id`,
    [userId, host])).rows[0].id;
});

afterAll(async () => {
  await db?.end();
  await pgs?.stop();
});

const unpublished = async () => (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE kafka_published_at IS NULL')).rows[0].n;

it('Kafka away: a batch fails, rolls back, keeps every row unpublished, and the relay backs off', async () => {
  await recordEvent(db, { type: 'container.created', userId, imageId, containerId: 1, appHostname: 'x' });
  const before = await unpublished();
  expect(before).toBeGreaterThan(0);
  const relay = new KafkaRelay(db, ['127.0.0.1:1'], log, `t-${randomBytes(3).toString('hex')}`, 50);
  await expect(relay.batch()).rejects.toThrow();
  expect(await unpublished()).toBe(before);
  relay.start();
  await new Promise((r) => setTimeout(r, 1500));
  await relay.stop();
  expect(relay.lastError).not.toBe('');
  expect(relay.published).toBe(0);
  expect(await unpublished()).toBe(before);
});

const brokers = process.env.KAFKA_BROKERS?.split(',').map((s) => s.trim()).filter(Boolean) ?? [];
if (!brokers.length) process.stderr.write('[skip] Kafka relay against a broker: KAFKA_BROKERS is not set (the docker-compose stack has one)\n');
describe.skipIf(!brokers.length)('Kafka relay against a broker (KAFKA_BROKERS)', () => {
  it('publishes the outbox keyed by image id, in order, and marks rows published', async () => {
    const topic = `container-lifecycle-test-${randomBytes(4).toString('hex')}`;
    const relay = new KafkaRelay(db, brokers, log, topic);
    for (const t of ['container.created', 'container.started', 'container.healthy']) await recordEvent(db, { type: t, userId, imageId, containerId: 7, appHostname: 'k.example.com', payload: { host_port: 40000 } });
    const ids = (await db.query<{ id: number }>('SELECT id FROM events WHERE kafka_published_at IS NULL ORDER BY id')).rows.map((r) => Number(r.id));
    while (await relay.batch()) { /* drain */ }
    await relay.stop();
    expect(await unpublished()).toBe(0);
    const kafka = new Kafka({ clientId: 'berth-test', brokers, logLevel: logLevel.NOTHING });
    const consumer = kafka.consumer({ groupId: `g-${randomBytes(4).toString('hex')}` });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const got: { key: string; id: number; type: string }[] = [];
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`only ${got.length} of ${ids.length} messages arrived`)), 30_000);
      void consumer.run({ eachMessage: async ({ message }) => {
        const v = JSON.parse(message.value!.toString());
        got.push({ key: message.key!.toString(), id: Number(v.id), type: v.type });
        if (got.length >= ids.length) { clearTimeout(t); resolve(); }
      } });
    });
    await consumer.disconnect();
    const forImage = got.filter((g) => g.key === String(imageId));
    expect(forImage.map((g) => g.id)).toEqual([...forImage.map((g) => g.id)].sort((a, b) => a - b)); // one partition per key: ordered
    expect(got.map((g) => g.id).sort((a, b) => a - b)).toEqual(ids);
  });
});

const consulAddr = process.env.CONSUL_HTTP_ADDR;
if (!consulAddr) process.stderr.write('[skip] Consul registration: CONSUL_HTTP_ADDR is not set (the docker-compose stack has one)\n');
describe.skipIf(!consulAddr)('Consul registration (CONSUL_HTTP_ADDR)', () => {
  it('registers healthy containers with a check and deregisters them when they go', async () => {
    const { rows: [c] } = await db.query(
      `INSERT INTO containers (user_id, image_id, name, status, health, host_port, internal_port, desired)
       VALUES ($1, $2, $3, 'running', 'healthy', 45678, 8080, 'running') RETURNING id`, [userId, imageId, `berth-u${userId}-i${imageId}-consul`]);
    const id = Number(c.id);
    const sync = new ConsulSync(db, consulAddr!, '127.0.0.1', log, 5000, () => true, 'relaytest');
    try {
      const r1 = await sync.sync();
      expect(r1.registered).toContain(serviceId('relaytest', id));
      const services = (await sync.consul.agent.service.list()) as Record<string, { Port: number; Tags: string[]; Meta: Record<string, string> }>;
      expect(services[serviceId('relaytest', id)]).toMatchObject({ Port: 45678 });
      expect(services[serviceId('relaytest', id)].Meta.container_id).toBe(String(id));
      const checks = (await sync.consul.agent.check.list()) as Record<string, { ServiceID: string }>;
      expect(Object.values(checks).some((ch) => ch.ServiceID === serviceId('relaytest', id))).toBe(true);
      expect((await sync.sync()).registered).toEqual([]); // idempotent
      await db.query(`UPDATE containers SET health = 'unhealthy' WHERE id = $1`, [id]);
      const r2 = await sync.sync();
      expect(r2.deregistered).toContain(serviceId('relaytest', id));
      expect(((await sync.consul.agent.service.list()) as Record<string, unknown>)[serviceId('relaytest', id)]).toBeUndefined();
    } finally {
      await sync.consul.agent.service.deregister(serviceId('relaytest', id)).catch(() => {});
      await db.query('DELETE FROM containers WHERE id = $1', [id]);
    }
  });
});
