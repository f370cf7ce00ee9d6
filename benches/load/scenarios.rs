//! The scenarios of one run, in the order they run. Each adds its rows to the table and returns
//! the figures the budget and the derived lines need.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy_primitives::U256;
use bytes::Bytes;
use x402_sidecar::buyer::client;
use x402_sidecar::devkit::devnet::Devnet;
use x402_sidecar::devkit::nodes::Otlp;
use x402_sidecar::devkit::peers::OfficialPeers;
use x402_sidecar::devkit::spawn::Sidecar;
use x402_sidecar::devkit::world::Money;

use crate::flows::{Floor, inprocess_settler, paid_200, settle_inprocess, via_flow, whole_flow};
use crate::measure::{Run, counted, expect, open_loop, timed};
use crate::phases::{Phases, add_phases, block, phase_mean, phase_means, phases};
use crate::raw;
use crate::report::{ChainCheck, Forward, Presigned, Rounds, Row, clients};
use crate::stack::{Stack, otlp_sink, start_facilitator, start_seller};
use crate::watch::{Cost, Pids, Watch, find_anvil, watched};
use crate::{Knobs, PRICE, Res, say};

/// What every scenario shares: the knobs, the client, the URLs, the watched processes, the
/// count of paid 200s (checked against the chain at the end) and the table so far.
pub(crate) struct Ctx {
    pub(crate) k: Knobs,
    warmup: Duration,
    measure: Duration,
    http: reqwest::Client,
    seed: Bytes,
    pids: Pids,
    paid_url: String,
    via_url: String,
    /// The seller's admin base URL.
    admin: String,
    paid_ok: Arc<AtomicU64>,
    pub(crate) rows: Vec<Row>,
}

impl Ctx {
    pub(crate) fn new(k: Knobs, stack: &Stack) -> Res<Ctx> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Ctx {
            k,
            warmup: Duration::from_secs(k.warmup),
            measure: Duration::from_secs(k.secs),
            http,
            seed: Bytes::from_static(x402_sidecar::advisor::SEED_EXAMPLE.as_bytes()),
            pids: Pids {
                seller: stack.seller.pid(),
                buyer: stack.buyer.pid(),
                anvil: find_anvil(),
                upstream: stack.upstream.pid(),
            },
            paid_url: format!("{}/x402", stack.seller.url),
            via_url: format!("{}/x402", stack.buyer.url),
            admin: format!("http://127.0.0.1:{}", stack.seller_admin),
            paid_ok: Arc::new(AtomicU64::new(0)),
            rows: Vec::new(),
        })
    }

    /// The paid 200s so far.
    pub(crate) fn paid_200(&self) -> u64 {
        self.paid_ok.load(Ordering::Relaxed)
    }
}

/// One paid call each way must work before anything is measured.
pub(crate) async fn sanity(c: &Ctx, stack: &Stack) -> Res<()> {
    say("sanity: one paid call to the seller, one through the buyer's outbound proxy");
    let first = client::pay(
        &c.http,
        &c.paid_url,
        c.seed.clone(),
        &stack.buyers[0],
        false,
        None,
        |_| {},
    )
    .await
    .map_err(|e| format!("the first paid call failed: {e}"))?;
    if first.status != 200 {
        return Err(format!(
            "the first paid call answered {} ({}); seller log:\n{}",
            first.status,
            String::from_utf8_lossy(&first.body),
            stack.seller.log_tail(15)
        ));
    }
    c.paid_ok.fetch_add(1, Ordering::Relaxed);
    let via = c
        .http
        .post(&c.via_url)
        .header("Content-Type", "application/json")
        .body(c.seed.clone());
    expect(via, 200).await.map_err(|e| {
        format!(
            "the first call through the outbound proxy failed: {e}; buyer log:\n{}",
            stack.buyer.log_tail(15)
        )
    })?;
    c.paid_ok.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// 1. Forward path: the same upstream directly and through the seller's free route, at one
///    client, at a fixed arrival rate below saturation, and saturated.
pub(crate) async fn forward(c: &mut Ctx, stack: &mut Stack) -> Res<Forward> {
    let k = c.k;
    let loads = [
        ("closed", 1usize, clients(1)),
        ("open", k.rate as usize, format!("{}/s open loop", k.rate)),
        ("closed", k.conc, clients(k.conc)),
    ];
    let mut figures = BTreeMap::new();
    for (mode, n, load) in &loads {
        for (label, base) in [
            ("direct", stack.upstream.url.clone()),
            ("via seller", stack.seller.url.clone()),
        ] {
            say(format!(
                "forward path, {label}: GET /free, {load}, {}+{} s",
                k.warmup, k.secs
            ));
            let (http, url) = (c.http.clone(), format!("{base}/free"));
            let f = move || expect(http.get(&url), 200);
            let (run, cost) = if *mode == "open" {
                watched(&c.pids, open_loop(*n as u64, c.warmup, c.measure, f)).await
            } else {
                watched(&c.pids, timed(*n, c.warmup, c.measure, f)).await
            };
            figures.insert(
                (load.clone(), label),
                (run.pct(50.0), run.pct(99.0), run.mean()),
            );
            c.rows.push(Row {
                name: format!("forward `GET /free`, {label}"),
                load: load.clone(),
                run,
                cost,
                note: if label == "direct" {
                    "the stand-in upstream alone".into()
                } else {
                    String::new()
                },
            });
            stack.alive()?;
        }
    }
    Ok(Forward {
        loads: loads.into_iter().map(|(_, _, load)| load).collect(),
        figures,
    })
}

/// Unpaid POSTs of the seed request to `url` from `conc` clients of the lean client
/// ([`crate::raw`], the same for every seller compared), each answered 402; the processes of
/// `pids` watched meanwhile.
async fn unpaid_402(c: &Ctx, conc: usize, url: &str, pids: &Pids) -> Res<(Run, Cost)> {
    unpaid_402_for(c, conc, url, pids, c.measure).await
}

/// [`unpaid_402`], measured for `measure` (after the run's warm-up).
async fn unpaid_402_for(
    c: &Ctx,
    conc: usize,
    url: &str,
    pids: &Pids,
    measure: Duration,
) -> Res<(Run, Cost)> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let addr = u
        .socket_addrs(|| None)
        .ok()
        .and_then(|a| a.into_iter().next())
        .ok_or_else(|| format!("{url}: no address"))?;
    let req = raw::post_json(addr, u.path(), &c.seed);
    let run = raw::timed(conc, c.warmup, measure, addr, req, 402);
    Ok(watched(pids, run).await)
}

/// The name of our 402 rows (the budget compares the official sellers' rows with it).
pub(crate) const OURS_402: &str = "402 path: unpaid `POST /x402` (seed StrategyRequest)";

/// 2. The 402 path: unpaid POSTs of the seed StrategyRequest; (errors, answers) at 200 clients.
///    Then the same at the run's concurrency on a seller with its rate limits on (`per_ip` set
///    so high that no call is refused: what checking them costs).
pub(crate) async fn unpaid(c: &mut Ctx, stack: &mut Stack, dir: &Path) -> Res<(u64, u64)> {
    let mut at_200 = (0u64, 0u64);
    for conc in [c.k.conc, 200] {
        say(format!(
            "402 path: unpaid POST /x402, {}, {}+{} s",
            clients(conc),
            c.k.warmup,
            c.k.secs
        ));
        let (run, cost) = unpaid_402(c, conc, &c.paid_url, &c.pids).await?;
        if conc == 200 {
            at_200 = (run.error_count(), run.all);
        }
        c.rows.push(Row {
            name: OURS_402.into(),
            load: clients(conc),
            run,
            cost,
            note: String::new(),
        });
        stack.alive()?;
    }
    let key = x402_sidecar::evm::keys::DEV_KEYS[9].to_string();
    let (mut limited, _) = start_seller(
        dir,
        "seller-limits",
        &stack.upstream.url,
        &stack.net,
        key,
        |n| {
            n.limits_off = false;
            n.per_ip = Some((1_000_000_000, 1));
        },
    )
    .await?;
    // Off and on in alternating rounds on the same stretch of time: the machine's drift
    // between two runs is as large as what is measured.
    let conc = c.k.conc;
    let round = Duration::from_secs(c.k.secs.div_ceil(ROUNDS as u64).max(1));
    say(format!(
        "402 path, rate limits off and on in {ROUNDS} alternating rounds, {}, {} s each",
        clients(conc),
        round.as_secs()
    ));
    let sides = [
        (OFF_402, c.paid_url.clone(), c.pids),
        (
            LIMITED_402,
            format!("{}/x402", limited.url),
            Pids {
                seller: limited.pid(),
                ..c.pids
            },
        ),
    ];
    let mut merged: Vec<Option<(Run, Cost)>> = vec![None, None];
    for _ in 0..ROUNDS {
        for (i, (_, url, pids)) in sides.iter().enumerate() {
            let (run, cost) = unpaid_402_for(c, conc, url, pids, round).await?;
            match &mut merged[i] {
                Some((r, k)) => {
                    r.absorb(run);
                    k.absorb(&cost);
                }
                slot => *slot = Some((run, cost)),
            }
        }
    }
    for ((name, _, _), m) in sides.iter().zip(merged) {
        if let Some((run, cost)) = m {
            c.rows.push(Row {
                name: (*name).into(),
                load: clients(conc),
                run,
                cost,
                note: format!(
                    "{ROUNDS} rounds of {} s, alternating; on: `inbound.limits` on, `per_ip` 10⁹/s (every call checked, none refused)",
                    round.as_secs()
                ),
            });
        }
    }
    limited.check_alive().map_err(|e| e.to_string())?;
    Ok(at_200)
}

/// The name of the 402 row with rate limits off, interleaved with [`LIMITED_402`].
pub(crate) const OFF_402: &str = "402 path, rate limits off (interleaved with on)";

/// The name of the 402 row with rate limits on.
pub(crate) const LIMITED_402: &str = "402 path, rate limits on: unpaid `POST /x402`";

/// 2b. The same 402 path on the official sellers, in the same run: the FastAPI
///     `payment_middleware` (one uvicorn worker) and `@x402/express`, both configured with a
///     facilitator service of ours (they ask it `/supported` at start; a 402 needs nothing
///     else). Skipped, with a line saying why, when the peers are not installed (`make
///     interop`).
pub(crate) async fn official_402(c: &mut Ctx, stack: &mut Stack, dir: &Path) -> Res<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let peers = match OfficialPeers::find(root) {
        Ok(p) => p,
        Err(why) => {
            say(format!("official sellers: skipped, {why}"));
            return Ok(());
        }
    };
    let fac = start_facilitator(dir, &stack.net, 7).await?;
    let pay_to = stack.net.pay_to;
    let py = peers
        .python_seller(dir, &fac.url, pay_to)
        .await
        .map_err(|e| e.to_string())?;
    let js = peers
        .express_seller(dir, &fac.url, pay_to)
        .await
        .map_err(|e| e.to_string())?;
    let conc = c.k.conc;
    for (name, peer) in [
        (
            "402 path: the official Python seller (FastAPI `payment_middleware`, one uvicorn worker)",
            &py,
        ),
        (
            "402 path: the official express seller (`@x402/express`, one node process)",
            &js,
        ),
    ] {
        say(format!(
            "{name}, {}, {}+{} s",
            clients(conc),
            c.k.warmup,
            c.k.secs
        ));
        let pids = Pids {
            seller: peer.pid(),
            ..c.pids
        };
        let (run, cost) = unpaid_402(c, conc, &format!("{}/x402", peer.url), &pids).await?;
        c.rows.push(Row {
            name: name.into(),
            load: clients(conc),
            run,
            cost,
            note: "the `seller` columns are this peer's process".into(),
        });
    }
    stack.alive()?;
    Ok(())
}

/// Rounds of the one-client paid scenarios.
const ROUNDS: usize = 4;

/// Calls per round of each one-client paid scenario (and of the floor at the end).
pub(crate) fn per_round(k: &Knobs) -> usize {
    k.seq.div_ceil(ROUNDS)
}

/// The six one-client paid scenarios, in the order of a round.
const ONE_CLIENT: [&str; 6] = [
    "devnet floor: one settlement's RPCs, no sidecar",
    "`evm::Chain::settle` in-process (the settle phase without the sidecar around it)",
    "paid call, whole flow, client → seller",
    "paid call via the buyer's outbound proxy → seller",
    "ablation: paid call, whole flow, client → a seller with `audit.enabled: false`",
    "ablation: paid call, whole flow, client → a seller exporting spans (`otlp.enabled: true`)",
];

/// A seller of the one-client rounds besides the main one: its process, paid route, admin URL
/// and the processes to watch while it is measured.
struct Ablation {
    seller: Sidecar,
    url: String,
    admin: String,
    pids: Pids,
}

/// A seller in front of the run's upstream settling with anvil dev key `key` (so no two
/// settlers share a nonce).
async fn ablation(
    c: &Ctx,
    stack: &Stack,
    dir: &Path,
    name: &str,
    key: usize,
    audit: bool,
    otlp: Option<Otlp>,
) -> Res<Ablation> {
    let key = x402_sidecar::evm::keys::DEV_KEYS[key].to_string();
    let (upstream, net) = (&stack.upstream.url, &stack.net);
    let (seller, admin) = start_seller(dir, name, upstream, net, key, |n| {
        n.audit = audit;
        n.otlp = otlp;
    })
    .await?;
    Ok(Ablation {
        url: format!("{}/x402", seller.url),
        admin: format!("http://127.0.0.1:{admin}"),
        pids: Pids {
            seller: seller.pid(),
            ..c.pids
        },
        seller,
    })
}

/// Run, cost and seller phases of each one-client scenario, summed over the rounds.
type Slots = Vec<(Run, Cost, Phases)>;

/// The settle phase without a sidecar: the devnet's floor and the settler code in-process.
struct Settlers {
    floor: Floor,
    chain: x402_sidecar::evm::Chain,
}

/// 3. Paid calls at one client: whole calls as a client makes them (POST → 402 → sign → POST →
///    settled 200) to the seller, through the buyer's outbound proxy, and to a second seller
///    whose audit journal is off (its own settler key, so the two settlers never share a
///    nonce); and, for the settle phase, the devnet's floor and the sidecar's settler code called
///    in this process. Interleaved in rounds, because anvil slows down as blocks accumulate and
///    back-to-back runs would not be compared on the same chain.
pub(crate) async fn paid_rounds(c: &mut Ctx, stack: &mut Stack, dir: &Path) -> Res<Rounds> {
    let quiet = ablation(c, stack, dir, "seller-noaudit", 5, false, None).await?;
    // And a seller exporting its spans over OTLP/HTTP to a collector in this process that
    // decodes nothing and answers 200 (its own settler key too).
    let (sink, sink_posts, sink_bytes) = otlp_sink().await?;
    let otlp = Otlp {
        endpoint: sink.to_string(),
        service_name: "load-seller".into(),
        batch_delay_ms: 1000,
    };
    let traced = ablation(c, stack, dir, "seller-otlp", 6, true, Some(otlp)).await?;
    let mut settlers = Settlers {
        floor: Floor::new(&stack.net).await?,
        chain: inprocess_settler(&stack.net)?,
    };
    let first_block = block(&stack.net).await;
    say(format!(
        "paid path at 1 client, {ROUNDS} interleaved rounds of {} calls each: devnet floor, settler code in-process, client → seller, via the buyer's outbound proxy, client → seller without audit journal, client → seller exporting spans over OTLP",
        per_round(&c.k)
    ));
    let mut ablations = [quiet, traced];
    let six = play_rounds(c, stack, &mut ablations, &mut settlers).await?;
    drop(ablations);
    // SIGKILL on drop would lose the last batch; the counts below are what arrived meanwhile.
    drop(sink);
    let blocks = format!("blocks {first_block}–{}", block(&stack.net).await);
    let rounds = Rounds {
        settle_mean_c1: phase_mean(&Phases::new(), &six[2].2, "settle"),
        floor_mean: six[0].0.mean(),
        inproc_mean: six[1].0.mean(),
        noaudit: (six[4].0.pct(50.0), six[4].0.mean()),
        otlp: (six[5].0.pct(50.0), six[5].0.mean()),
        exported: (
            sink_posts.load(Ordering::SeqCst),
            sink_bytes.load(Ordering::SeqCst),
        ),
    };
    round_rows(c, six, &settlers.floor, &blocks);
    Ok(rounds)
}

/// The rounds: each one-client scenario in turn, [`ROUNDS`] times, every process checked after
/// each round.
async fn play_rounds(
    c: &Ctx,
    stack: &mut Stack,
    ablations: &mut [Ablation; 2],
    settlers: &mut Settlers,
) -> Res<Slots> {
    let per_round = per_round(&c.k);
    let buyers = &stack.buyers.clone();
    let mut six: Slots = (0..ONE_CLIENT.len())
        .map(|_| (Run::default(), Cost::default(), Phases::new()))
        .collect();
    for _ in 0..ROUNDS {
        for (i, slot) in six.iter_mut().enumerate() {
            let (watch_pids, admin_url) = match i {
                4 | 5 => (&ablations[i - 4].pids, &ablations[i - 4].admin),
                _ => (&c.pids, &c.admin),
            };
            let (http, seed, ok) = (&c.http, &c.seed, &c.paid_ok);
            let before = phases(http, admin_url).await;
            let w = Watch::start(watch_pids);
            let run = match i {
                0 => settlers.floor.run(&buyers[0], per_round).await?,
                1 => {
                    let payer = &buyers[1 % buyers.len()];
                    settle_inprocess(&settlers.chain, payer, per_round).await?
                }
                2 => whole_flow(http, &c.paid_url, seed, buyers, per_round, 1, ok).await,
                3 => via_flow(http, &c.via_url, seed, per_round, 1, ok).await,
                _ => {
                    let url = &ablations[i - 4].url;
                    whole_flow(http, url, seed, buyers, per_round, 1, ok).await
                }
            };
            let cost = w.finish().await;
            let after = phases(http, admin_url).await;
            slot.0.absorb(run);
            slot.1.absorb(&cost);
            add_phases(&mut slot.2, &before, &after);
        }
        stack.alive()?;
        for a in ablations.iter_mut() {
            a.seller.check_alive().map_err(|e| e.to_string())?;
        }
    }
    Ok(six)
}

/// One row per one-client scenario, noted with the blocks the rounds spanned.
fn round_rows(c: &mut Ctx, six: Slots, floor: &Floor, blocks: &str) {
    for (i, (run, cost, ph)) in six.into_iter().enumerate() {
        let note = match i {
            0 => format!("{}; {blocks}", floor.note()),
            1 => blocks.to_string(),
            _ => format!(
                "seller phases, mean ms: {}; {blocks}",
                phase_means(&Phases::new(), &ph)
            ),
        };
        c.rows.push(Row {
            name: ONE_CLIENT[i].into(),
            load: format!("1 client, {} calls", run.all),
            run,
            cost,
            note,
        });
    }
}

/// Run `work` while watching the processes; its note names the seller's mean phases and the
/// blocks the run spanned.
async fn watched_phases(
    c: &Ctx,
    net: &Devnet,
    work: impl Future<Output = Run>,
) -> (Run, Cost, String) {
    let first_block = block(net).await;
    let before = phases(&c.http, &c.admin).await;
    let (run, cost) = watched(&c.pids, work).await;
    let after = phases(&c.http, &c.admin).await;
    let note = format!(
        "seller phases, mean ms: {}; blocks {first_block}–{}",
        phase_means(&before, &after),
        block(net).await
    );
    (run, cost, note)
}

/// 5. Paid throughput: pre-signed payments, distinct nonces, several buyers.
pub(crate) async fn presigned(c: &mut Ctx, stack: &mut Stack) -> Res<Presigned> {
    let (k, buyers, net) = (c.k, &stack.buyers, &stack.net);
    say(format!(
        "paid path, pre-signed: signing {} payments from {} buyers",
        k.paid,
        buyers.len()
    ));
    let unpaid = c
        .http
        .post(&c.paid_url)
        .header("Content-Type", "application/json")
        .body(c.seed.clone())
        .send()
        .await
        .map_err(|e| format!("402 for pre-signing: {e}"))?;
    let header = unpaid
        .headers()
        .get(x402_sidecar::x402::HEADER_PAYMENT_REQUIRED)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body402 = unpaid.bytes().await.map_err(|e| e.to_string())?;
    let offer = client::parse_challenge(header.as_deref(), &body402, false)
        .map_err(|e| format!("the 402 could not be parsed: {e}"))?;
    let mut payments = Vec::with_capacity(k.paid);
    for i in 0..k.paid {
        let (name, value, _) = client::payment_for(&buyers[i % buyers.len()], &offer)
            .map_err(|e| format!("signing: {e}"))?;
        payments.push((name, value));
    }
    say(format!(
        "paid path, pre-signed: {} paid calls, {}",
        k.paid,
        clients(k.paid_conc)
    ));
    let (http, url, body, ok) = (
        c.http.clone(),
        c.paid_url.clone(),
        c.seed.clone(),
        c.paid_ok.clone(),
    );
    let work = counted(
        k.paid_conc,
        payments,
        move |(name, value): &(&'static str, String)| {
            let req = http
                .post(&url)
                .header("Content-Type", "application/json")
                .header(*name, value)
                .body(body.clone());
            paid_200(req, &ok)
        },
    );
    let (run, cost, note) = watched_phases(c, net, work).await;
    let presigned = Presigned {
        errors: run.error_count(),
        ok: run.ok,
        rate: run.rate(),
    };
    c.rows.push(Row {
        name: "paid path, pre-signed payments → seller (settled on the devnet)".into(),
        load: format!("{}, {} calls", clients(k.paid_conc), k.paid),
        run,
        cost,
        note,
    });
    stack.alive()?;
    Ok(presigned)
}

/// 5b. Whole paid calls at 8 clients, to the seller and through the buyer's outbound proxy.
pub(crate) async fn whole_at_8(c: &mut Ctx, stack: &mut Stack) -> Res<()> {
    for via in [false, true] {
        let n = c.k.seq * 2;
        say(format!(
            "paid path, whole calls, 8 clients, {n} calls, {}",
            if via {
                "via the buyer's outbound proxy"
            } else {
                "client → seller"
            }
        ));
        let (http, seed, ok) = (&c.http, &c.seed, &c.paid_ok);
        let (run, cost, note) = if via {
            let flow = via_flow(http, &c.via_url, seed, n, 8, ok);
            watched_phases(c, &stack.net, flow).await
        } else {
            let flow = whole_flow(http, &c.paid_url, seed, &stack.buyers, n, 8, ok);
            watched_phases(c, &stack.net, flow).await
        };
        c.rows.push(Row {
            name: if via {
                "paid call via the buyer's outbound proxy → seller"
            } else {
                "paid call, whole flow, client → seller"
            }
            .into(),
            load: format!("8 clients, {n} calls"),
            run,
            cost,
            note,
        });
        stack.alive()?;
    }
    Ok(())
}

/// The devnet's floor again: how much slower anvil got with the blocks of this run. Its mean.
pub(crate) async fn floor_again(c: &mut Ctx, stack: &Stack) -> Res<f64> {
    say("devnet floor again, at the end of the run");
    let net = &stack.net;
    let first_block = block(net).await;
    let mut floor_end = Floor::new(net).await?;
    let w = Watch::start(&c.pids);
    let run = floor_end.run(&stack.buyers[0], per_round(&c.k)).await?;
    let cost = w.finish().await;
    let mean = run.mean();
    c.rows.push(Row {
        name: "devnet floor again, at the end of the run".into(),
        load: format!("1 client, {} calls", run.all),
        run,
        cost,
        note: format!(
            "{}; blocks {first_block}–{}",
            floor_end.note(),
            block(net).await
        ),
    });
    Ok(mean)
}

/// 6. The chain must agree: one transfer of the price to payTo per paid 200 (the dev kit's
///    money check).
pub(crate) async fn chain(c: &Ctx, stack: &Stack) -> Res<ChainCheck> {
    say("checking the chain: transfers to the seller vs paid 200s");
    let money = Money::new(&stack.net, PRICE);
    let transfers = money
        .transfers()
        .await
        .map_err(|e| format!("reading transfers: {e}"))?;
    let paid_200 = c.paid_200();
    let mismatch = money
        .check_transfers(paid_200 as usize)
        .await
        .err()
        .map(|e| e.to_string());
    Ok(ChainCheck {
        transfers: transfers.len(),
        all_priced: transfers.iter().all(|t| t.value == U256::from(PRICE)),
        paid_200,
        mismatch,
    })
}

/// Pre-sign `n` payments for the paid route at `url` (its own 402), from `buyers` in turn.
async fn presign(
    c: &Ctx,
    url: &str,
    buyers: &[alloy_signer_local::PrivateKeySigner],
    n: usize,
) -> Res<Vec<(&'static str, String)>> {
    let unpaid = c
        .http
        .post(url)
        .header("Content-Type", "application/json")
        .body(c.seed.clone())
        .send()
        .await
        .map_err(|e| format!("402 for pre-signing: {e}"))?;
    let header = unpaid
        .headers()
        .get(x402_sidecar::x402::HEADER_PAYMENT_REQUIRED)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body402 = unpaid.bytes().await.map_err(|e| e.to_string())?;
    let offer = client::parse_challenge(header.as_deref(), &body402, false)
        .map_err(|e| format!("the 402 could not be parsed: {e}"))?;
    (0..n)
        .map(|i| {
            client::payment_for(&buyers[i % buyers.len()], &offer)
                .map(|(name, value, _)| (name, value))
                .map_err(|e| format!("signing: {e}"))
        })
        .collect()
}

/// One side of the batching comparison: a seller, its run so far and the gas its settlements
/// used on chain.
struct Side {
    name: &'static str,
    url: String,
    pids: Pids,
    _seller: Sidecar,
}

/// Settlements and gas of the transfers to payTo after the first `since` of them: (settlements,
/// transactions, gas used by those transactions).
async fn gas_since(net: &Devnet, since: usize) -> Res<(usize, usize, u64)> {
    let money = Money::new(net, PRICE);
    let all = money
        .transfers()
        .await
        .map_err(|e| format!("reading transfers: {e}"))?;
    let new = &all[since.min(all.len())..];
    let txs: std::collections::BTreeSet<_> = new.iter().map(|t| t.tx).collect();
    let mut gas = 0u64;
    for tx in &txs {
        use alloy_provider::Provider;
        let r = net
            .provider()
            .get_transaction_receipt(*tx)
            .await
            .map_err(|e| format!("receipt: {e}"))?
            .ok_or("a settlement without a receipt")?;
        gas += r.gas_used;
    }
    Ok((new.len(), txs.len(), gas))
}

/// 7. Batched settlement side by side (issue 13): pre-signed payments to a seller settling one
///    transaction per payment and to one with `batch:` on (the defaults: 5 ms window, at most
///    32 per batch), each with its own settler key, at 16 and 64 clients, in two interleaved
///    rounds (anvil slows down as blocks accumulate). Gas per settlement comes from the
///    receipts of the transactions that carried the transfers.
pub(crate) async fn batching(c: &mut Ctx, stack: &mut Stack, dir: &Path) -> Res<usize> {
    let (upstream, net) = (&stack.upstream.url, &stack.net);
    let mut sides = Vec::new();
    for (name, key, batch) in [
        ("one transaction per payment", 7usize, None),
        (
            "batched (`batch: {}`: 5 ms, ≤ 32)",
            8,
            Some((5u64, 32usize)),
        ),
    ] {
        let key = x402_sidecar::evm::keys::DEV_KEYS[key].to_string();
        let name_of = if batch.is_some() {
            "seller-batch"
        } else {
            "seller-single"
        };
        let (seller, _) = start_seller(dir, name_of, upstream, net, key, |n| {
            n.settlement.batch = batch;
        })
        .await?;
        sides.push(Side {
            name,
            url: format!("{}/x402", seller.url),
            pids: Pids {
                seller: seller.pid(),
                ..c.pids
            },
            _seller: seller,
        });
    }
    let per_run = (c.k.paid / 2).max(1);
    // (conc, side) → (run, cost, settlements, txs, gas, first block, last block)
    type Acc = (Run, Cost, usize, usize, u64, u64, u64);
    let mut acc: BTreeMap<(usize, usize), Acc> = BTreeMap::new();
    for round in 0..2 {
        for conc in [16usize, 64] {
            for s in 0..sides.len() {
                // Alternate which side goes first, round by round.
                let s = if round == 0 { s } else { sides.len() - 1 - s };
                let side = &sides[s];
                say(format!(
                    "batching, round {}: {} → {}, {per_run} pre-signed paid calls",
                    round + 1,
                    clients(conc),
                    side.name
                ));
                let payments = presign(c, &side.url, &stack.buyers, per_run).await?;
                let before = Money::new(&stack.net, PRICE)
                    .transfers()
                    .await
                    .map_err(|e| format!("reading transfers: {e}"))?
                    .len();
                let first = block(&stack.net).await;
                let (http, url, body, ok) = (
                    c.http.clone(),
                    side.url.clone(),
                    c.seed.clone(),
                    c.paid_ok.clone(),
                );
                let work = counted(
                    conc,
                    payments,
                    move |(name, value): &(&'static str, String)| {
                        let req = http
                            .post(&url)
                            .header("Content-Type", "application/json")
                            .header(*name, value)
                            .body(body.clone());
                        paid_200(req, &ok)
                    },
                );
                let (run, cost) = watched(&side.pids, work).await;
                let last = block(&stack.net).await;
                let (n, txs, gas) = gas_since(&stack.net, before).await?;
                match acc.get_mut(&(conc, s)) {
                    Some(a) => {
                        a.0.absorb(run);
                        a.1.absorb(&cost);
                        a.2 += n;
                        a.3 += txs;
                        a.4 += gas;
                        a.6 = last;
                    }
                    None => {
                        acc.insert((conc, s), (run, cost, n, txs, gas, first, last));
                    }
                }
                stack.alive()?;
            }
        }
    }
    let mut rows = Vec::new();
    for ((conc, s), (run, cost, n, txs, gas, first, last)) in acc {
        let per = if n == 0 { 0 } else { gas / n as u64 };
        rows.push(Row {
            name: format!("batching: pre-signed paid calls → seller, {}", sides[s].name),
            load: format!("{}, {} calls", clients(conc), run.all),
            run,
            cost,
            note: format!(
                "gas per settlement {per} ({n} settlements in {txs} transactions, {:.1} per transaction); blocks {first}–{last}",
                n as f64 / txs.max(1) as f64
            ),
        });
    }
    let start = c.rows.len();
    c.rows.extend(rows);
    Ok(start)
}
