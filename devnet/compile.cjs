#!/usr/bin/env node
// Compiles the devnet's contracts (contracts/TestUSDC.sol, contracts/Batcher.sol)
// with solc-js (the exact version pinned in package.json) and writes one artifact
// each, artifacts/<Name>.json.
//
//   node compile.cjs           compile and (re)write the artifacts
//   node compile.cjs --check   compile in memory and compare byte for byte with
//                              the committed artifacts; exit 1 on any difference
//
// Paths are resolved relative to this file, so it works from any directory.
'use strict';

const fs = require('fs');
const path = require('path');

// Each contract is compiled on its own, from its own source unit.
const CONTRACTS = ['TestUSDC', 'Batcher'];

function fail(lines) {
  for (const line of [].concat(lines)) console.error(line);
  process.exit(1);
}

function loadSolc() {
  try {
    return require('solc');
  } catch (err) {
    fail([
      `cannot load solc-js: ${err.message}`,
      'run `npm ci` in the devnet/ directory first',
    ]);
  }
}

function unit(name) {
  // Relative source unit name: it ends up in the metadata (and so in the
  // bytecode's metadata hash), so it must not depend on where the repo lives.
  const SOURCE_UNIT = `contracts/${name}.sol`;
  return {
    CONTRACT_NAME: name,
    SOURCE_UNIT,
    SOURCE_PATH: path.join(__dirname, 'contracts', `${name}.sol`),
    ARTIFACT_PATH: path.join(__dirname, 'artifacts', `${name}.json`),
    ARTIFACT_REL: path.relative(__dirname, path.join(__dirname, 'artifacts', `${name}.json`)),
  };
}

function compile({ CONTRACT_NAME, SOURCE_UNIT, SOURCE_PATH }) {
  const solc = loadSolc();
  const input = {
    language: 'Solidity',
    sources: {
      [SOURCE_UNIT]: { content: fs.readFileSync(SOURCE_PATH, 'utf8') },
    },
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: 'cancun',
      outputSelection: {
        [SOURCE_UNIT]: {
          [CONTRACT_NAME]: ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'],
        },
      },
    },
  };

  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const diagnostics = output.errors || [];
  const errors = diagnostics.filter((d) => d.severity === 'error');
  for (const d of diagnostics.filter((d) => d.severity !== 'error')) {
    console.error((d.formattedMessage || d.message).trimEnd());
  }
  if (errors.length > 0) {
    fail([
      ...errors.map((d) => (d.formattedMessage || d.message).trimEnd()),
      `compilation failed with ${errors.length} error(s)`,
    ]);
  }

  const contract = output.contracts && output.contracts[SOURCE_UNIT] && output.contracts[SOURCE_UNIT][CONTRACT_NAME];
  if (!contract) fail(`compiler output has no ${SOURCE_UNIT}:${CONTRACT_NAME}`);
  const bytecode = contract.evm && contract.evm.bytecode && contract.evm.bytecode.object;
  const deployedBytecode = contract.evm && contract.evm.deployedBytecode && contract.evm.deployedBytecode.object;
  if (!bytecode || !deployedBytecode) fail('compiler output has empty bytecode');

  const artifact = {
    contractName: CONTRACT_NAME,
    compiler: solc.version(),
    abi: contract.abi,
    bytecode: `0x${bytecode}`,
    deployedBytecode: `0x${deployedBytecode}`,
  };
  return { artifact, text: `${JSON.stringify(artifact, null, 2)}\n` };
}

function describeMismatch(expected, actualText, ARTIFACT_REL) {
  let actual;
  try {
    actual = JSON.parse(actualText);
  } catch (err) {
    return [`committed ${ARTIFACT_REL} is not valid JSON: ${err.message}`];
  }
  const reasons = [];
  const keys = new Set([...Object.keys(expected), ...Object.keys(actual)]);
  for (const key of keys) {
    if (!(key in actual)) reasons.push(`field "${key}" is missing from the committed artifact`);
    else if (!(key in expected)) reasons.push(`field "${key}" is in the committed artifact but not produced by the compiler`);
    else if (JSON.stringify(expected[key]) !== JSON.stringify(actual[key])) {
      if (key === 'compiler') {
        reasons.push(`compiler differs: committed ${actual[key]}, installed ${expected[key]}`);
      } else if (typeof expected[key] === 'string') {
        reasons.push(`field "${key}" differs (committed ${actual[key].length} chars, compiled ${expected[key].length} chars)`);
      } else {
        reasons.push(`field "${key}" differs`);
      }
    }
  }
  if (reasons.length === 0) reasons.push('contents are equal but the formatting differs (re-run `node compile.cjs`)');
  return reasons;
}

function main() {
  const args = process.argv.slice(2);
  const unknown = args.filter((a) => a !== '--check');
  if (unknown.length > 0) fail([`unknown argument(s): ${unknown.join(' ')}`, 'usage: node compile.cjs [--check]']);
  const check = args.includes('--check');
  let failed = [];
  for (const name of CONTRACTS) {
    const u = unit(name);
    const lines = one(u, check);
    if (lines) failed = failed.concat(lines);
  }
  if (failed.length > 0) fail(failed);
}

// Write or check one contract's artifact: the lines of its mismatch, if any.
function one({ CONTRACT_NAME, SOURCE_UNIT, SOURCE_PATH, ARTIFACT_PATH, ARTIFACT_REL }, check) {
  const { artifact, text } = compile({ CONTRACT_NAME, SOURCE_UNIT, SOURCE_PATH });

  if (check) {
    let committed;
    try {
      committed = fs.readFileSync(ARTIFACT_PATH, 'utf8');
    } catch (err) {
      fail([`cannot read committed artifact ${ARTIFACT_REL}: ${err.message}`, 'run `node compile.cjs` to create it']);
    }
    if (committed === text) {
      console.log(`artifact matches source (${ARTIFACT_REL})`);
      return null;
    }
    return [
      `${ARTIFACT_REL} does not match ${SOURCE_UNIT} compiled with solc ${artifact.compiler}:`,
      ...describeMismatch(artifact, committed, ARTIFACT_REL).map((r) => `  - ${r}`),
      'run `node compile.cjs` in devnet/ and commit the updated artifact',
    ];
  }

  fs.mkdirSync(path.dirname(ARTIFACT_PATH), { recursive: true });
  fs.writeFileSync(ARTIFACT_PATH, text);
  console.log(
    `wrote ${ARTIFACT_REL} (solc ${artifact.compiler}; bytecode ${(artifact.bytecode.length - 2) / 2} bytes, ` +
      `deployedBytecode ${(artifact.deployedBytecode.length - 2) / 2} bytes)`,
  );
  return null;
}

main();
