import { didYouMean } from './suggest.js';
import { UsageError, describeError } from './args.js';

const COMMANDS: Record<string, { module: string; summary: string }> = {
  proxy: { module: '../../proxy/cli.js', summary: 'run the edge proxy (data plane)' },
  'control-plane': { module: '../../control-plane/cli.js', summary: 'run the control plane API' },
  up: { module: '../../control-plane/up.js', summary: 'run control plane and proxy together on embedded defaults' },
  load: { module: '../../bench/workload/cli.js', summary: 'send open-model HTTP load to an app (--app) or a URL, with a report' },
  workloads: { module: '../../bench/workload/workloads-cli.js', summary: 'your workload runs on the control plane: list, show, --stop, --report FILE' },
  login: { module: '../client/commands/login.js', summary: 'sign in to a control plane (stores a token per API URL)' },
  logout: { module: '../client/commands/logout.js', summary: 'forget (and revoke) the stored login' },
  deploy: { module: '../client/commands/deploy.js', summary: 'deploy a folder with a Dockerfile to a URL (build log live, waits until healthy)' },
  apps: { module: '../client/commands/apps.js', summary: 'list your apps: revisions, status, instances, traffic' },
  logs: { module: '../client/commands/logs.js', summary: "print or follow an app's logs (every instance)" },
  events: { module: '../client/commands/events.js', summary: 'what happened to your apps: builds, instances, autoscaling, traffic (--follow)' },
  containers: { module: '../client/commands/containers.js', summary: 'list your containers (instances); stop or start one' },
  traffic: { module: '../client/commands/traffic.js', summary: "show or set an app's traffic split between revisions" },
  access: { module: '../client/commands/access.js', summary: 'who may call an app: public, or private with invoker tokens' },
  delete: { module: '../client/commands/delete.js', summary: 'delete an app: stop serving, remove its instances, then every revision' },
  billing: { module: '../client/commands/billing.js', summary: 'what your apps cost: instance time, requests and cost per revision; --month for an invoice (--csv)' },
};

function topHelp(): string {
  const lines = ['berth — Cloud Run on your own machines', '', 'Usage: berth <command> [options]', '', 'Commands:'];
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(16)} ${c.summary}`);
  lines.push('', 'Run `berth <command> --help` for the options of one command.');
  return lines.join('\n') + '\n';
}

export async function main(argv: string[]): Promise<void> {
  // `berth apps | head`: the reader went away; what is left to print has nobody to read it (a
  // stack trace of the EPIPE helped nobody). Exit as `head` itself would have the writer end.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(0);
      throw e;
    });
  }
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(topHelp());
    return;
  }
  const entry = COMMANDS[cmd];
  if (!entry) {
    process.stderr.write(`berth: unknown command "${cmd}"${didYouMean(cmd, Object.keys(COMMANDS))}\n\n${topHelp()}`);
    process.exit(2);
  }
  let mod: { run(argv: string[]): Promise<void> };
  try {
    mod = await import(entry.module);
  } catch (e) {
    process.stderr.write(`berth: command "${cmd}" is not available in this build: ${(e as Error).message}\n`);
    process.exit(1);
  }
  try {
    await mod.run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`berth ${cmd}: ${e.message}\nRun \`berth ${cmd} --help\` for usage.\n`);
      process.exit(2);
    }
    process.stderr.write(`berth ${cmd}: ${describeError(e)}\n`);
    process.exit(1);
  }
}
