//! deploy/kubernetes: each kustomize overlay rendered (the subset of kustomize the files use,
//! refused beyond it), then checked against the code (each sidecar.yaml resolves with the env
//! its pod gets, ports, probes, volumes, secrets, Redis, network policies, monitoring) and by
//! the strict validators of scripts/validate-deploy.py.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};
use x402_sidecar::config;

use super::port_of;

const KUBE: &str = "deploy/kubernetes";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn docs_at(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

/// `kustomize build DIR`, for what the files use: `resources` (files and directories),
/// `patches` (strategic merge, by kind and name), `images`, and `configMapGenerator` with
/// `disableNameSuffixHash`. Anything else panics, so the renderer never silently differs.
pub fn render(dir: &Path) -> Vec<Value> {
    let k = docs_at(&dir.join("kustomization.yaml")).remove(0);
    for key in k.as_mapping().unwrap().keys() {
        let key = key.as_str().unwrap();
        assert!(
            [
                "apiVersion",
                "kind",
                "resources",
                "patches",
                "images",
                "configMapGenerator"
            ]
            .contains(&key),
            "{dir:?}: kustomization field `{key}` is not understood by this check"
        );
    }
    let mut docs = Vec::new();
    for r in seq(&k["resources"]) {
        let p = dir.join(r.as_str().unwrap());
        if p.is_dir() {
            docs.extend(render(&p));
        } else {
            docs.extend(docs_at(&p));
        }
    }
    for g in seq(&k["configMapGenerator"]) {
        assert_eq!(
            g["options"]["disableNameSuffixHash"], true,
            "{dir:?}: generated ConfigMaps keep their names (disableNameSuffixHash)"
        );
        let mut data = Mapping::new();
        for f in seq(&g["files"]) {
            let f = f.as_str().unwrap();
            let name = Path::new(f).file_name().unwrap().to_string_lossy();
            let text = std::fs::read_to_string(dir.join(f)).unwrap();
            data.insert(Value::from(name.as_ref()), Value::from(text));
        }
        let mut meta = Mapping::new();
        meta.insert("name".into(), g["name"].clone());
        if !g["options"]["labels"].is_null() {
            meta.insert("labels".into(), g["options"]["labels"].clone());
        }
        let mut cm = Mapping::new();
        cm.insert("apiVersion".into(), "v1".into());
        cm.insert("kind".into(), "ConfigMap".into());
        cm.insert("metadata".into(), Value::Mapping(meta));
        cm.insert("data".into(), Value::Mapping(data));
        docs.push(Value::Mapping(cm));
    }
    for p in seq(&k["patches"]) {
        assert_eq!(
            p.as_mapping().unwrap().len(),
            1,
            "{dir:?}: patches by `path` only"
        );
        let path = dir.join(p["path"].as_str().unwrap());
        for patch in docs_at(&path) {
            let target = docs
                .iter_mut()
                .find(|d| {
                    d["kind"] == patch["kind"] && d["metadata"]["name"] == patch["metadata"]["name"]
                })
                .unwrap_or_else(|| panic!("{path:?} patches nothing in {dir:?}"));
            merge(target, &patch);
        }
    }
    for img in seq(&k["images"]) {
        let name = img["name"].as_str().unwrap();
        let mut hit = false;
        for d in &mut docs {
            for c in containers_mut(d) {
                let image = c["image"].as_str().unwrap().to_string();
                let (n, tag) = image.split_once(':').unwrap_or((&image, "latest"));
                if n == name {
                    let n = img["newName"].as_str().unwrap_or(n);
                    let tag = img["newTag"].as_str().unwrap_or(tag);
                    c["image"] = Value::from(format!("{n}:{tag}"));
                    hit = true;
                }
            }
        }
        assert!(hit, "{dir:?}: images entry {name} matches no container");
    }
    docs
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map(|s| s.as_slice()).unwrap_or(&[])
}

/// The pod template's containers (`get_mut`, not `[]`: indexing a Value mutably would insert
/// the missing keys).
fn containers_mut(d: &mut Value) -> Vec<&mut Value> {
    let mut v = Some(d);
    for key in ["spec", "template", "spec", "containers"] {
        v = v.and_then(|x| x.get_mut(key));
    }
    match v.and_then(|x| x.as_sequence_mut()) {
        Some(s) => s.iter_mut().collect(),
        None => Vec::new(),
    }
}

/// Strategic merge as Kubernetes does it for these objects: maps merge; lists of named
/// entries (containers, env, ports, volumes, volumeMounts) merge by `name`; other lists
/// (args, volumeClaimTemplates) are replaced.
fn merge(base: &mut Value, patch: &Value) {
    let named = |v: &Value| seq(v).iter().all(|e| e["name"].is_string()) && !seq(v).is_empty();
    match (base, patch) {
        (Value::Mapping(b), Value::Mapping(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b @ Value::Sequence(_), p @ Value::Sequence(_)) if named(b) && named(p) => {
            let items = b.as_sequence_mut().unwrap();
            for e in seq(p) {
                match items.iter_mut().find(|x| x["name"] == e["name"]) {
                    Some(x) => merge(x, e),
                    None => items.push(e.clone()),
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

fn container<'a>(sts: &'a Value, name: &str) -> &'a Value {
    seq(&sts["spec"]["template"]["spec"]["containers"])
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{:?}: no container {name}", sts["metadata"]["name"]))
}

fn strs(v: &Value) -> Vec<&str> {
    seq(v).iter().map(|a| a.as_str().unwrap()).collect()
}

fn named_port(c: &Value, name: &str) -> Option<u64> {
    seq(&c["ports"])
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| p["containerPort"].as_u64().unwrap())
}

/// The Secrets of secret.example.yaml, by name: their keys.
fn secrets() -> HashMap<String, Vec<String>> {
    docs_at(&root().join(KUBE).join("secret.example.yaml"))
        .into_iter()
        .map(|s| {
            let keys = s["stringData"]
                .as_mapping()
                .unwrap()
                .keys()
                .map(|k| k.as_str().unwrap().to_string())
                .collect();
            (s["metadata"]["name"].as_str().unwrap().to_string(), keys)
        })
        .collect()
}

/// What an operator puts in a Secret key: a valid value of the right kind.
fn secret_value(key: &str) -> String {
    if key.contains("PRIVATE_KEY") || key.starts_with("X402_SETTLER_KEY") {
        // A fixed, valid, non-devnet key per variable.
        format!("0x{}", x402_sidecar::util::sha256_hex(key.as_bytes()))
    } else if key == "password" {
        "3f6c2a9e0b7d41c8a5e2f0931b6d7c4e".into()
    } else {
        format!("an-operator-secret-for-{key}")
    }
}

/// What an operator sets for a placeholder (`REPLACE_ME…`) in an env value.
fn operator_value(name: &str) -> String {
    match name {
        "X402_PAY_TO" => "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        "X402_SELLER_PAY_TO" => "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
        "REMOTE_X402_ENDPOINT" => "https://seller.example/x402",
        other => panic!("no operator value for the placeholder of {other}"),
    }
    .into()
}

/// The container's environment: literal values, Secret keys (which must exist in
/// secret.example.yaml) and whole Secrets (`envFrom`). `(name, value, from a Secret)`.
struct PodEnv {
    vars: HashMap<String, String>,
    from_secret: HashMap<String, (String, String)>,
    placeholders: Vec<String>,
}

fn pod_env(c: &Value) -> PodEnv {
    let all = secrets();
    let mut env = PodEnv {
        vars: HashMap::new(),
        from_secret: HashMap::new(),
        placeholders: Vec::new(),
    };
    for e in seq(&c["envFrom"]) {
        let s = e["secretRef"]["name"].as_str().unwrap();
        if e["secretRef"]["optional"] == true {
            continue;
        }
        for k in all
            .get(s)
            .unwrap_or_else(|| panic!("envFrom: no Secret {s} in secret.example.yaml"))
        {
            env.vars.insert(k.clone(), secret_value(k));
            env.from_secret.insert(k.clone(), (s.into(), k.clone()));
        }
    }
    for e in seq(&c["env"]) {
        let name = e["name"].as_str().unwrap().to_string();
        if let Some(v) = e["value"].as_str() {
            let v = if v.starts_with("REPLACE_ME") {
                env.placeholders.push(name.clone());
                operator_value(&name)
            } else {
                v.to_string()
            };
            env.vars.insert(name, v);
        } else {
            let r = &e["valueFrom"]["secretKeyRef"];
            let (s, k) = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
            assert!(
                all.get(s).is_some_and(|keys| keys.iter().any(|x| x == k)),
                "{name}: Secret {s} has no key {k} in secret.example.yaml"
            );
            env.vars.insert(name.clone(), secret_value(k));
            env.from_secret.insert(name, (s.into(), k.into()));
        }
    }
    env
}

/// The sidecar.yaml of `cm`, resolved with the pod's env (the key variables go to the process
/// environment, where the sidecar reads them). Placeholders first must make it refuse.
fn resolve_in_pod(cm: &Value, c: &Value) -> (config::Config, config::Resolved, PodEnv) {
    let text = cm["data"]["sidecar.yaml"].as_str().unwrap();
    let env = pod_env(c);
    for (k, v) in &env.vars {
        if env.from_secret.contains_key(k) {
            // SAFETY: test-only variables; every thread sets the same value for a name.
            unsafe { std::env::set_var(k, v) };
        }
    }
    if !env.placeholders.is_empty() {
        let raw = |k: &str| {
            seq(&c["env"])
                .iter()
                .find(|e| e["name"] == k)
                .and_then(|e| e["value"].as_str().map(String::from))
                .or_else(|| env.vars.get(k).cloned())
        };
        let refused = config::parse(text, &raw)
            .ok()
            .and_then(|cfg| cfg.resolve().ok())
            .is_none();
        assert!(
            refused,
            "with the placeholders of {:?} the sidecar must refuse to start",
            env.placeholders
        );
    }
    let lookup = |k: &str| env.vars.get(k).cloned();
    let cfg = config::parse(text, &lookup).unwrap_or_else(|p| panic!("{p:#?}"));
    let r = cfg.resolve().unwrap_or_else(|p| panic!("{p:#?}"));
    (cfg, r, env)
}

/// The mount holding `path`, which must be a volumeClaimTemplate of `sts` (a PVC, not an
/// emptyDir).
fn assert_on_pvc(sts: &Value, c: &Value, path: &Path, what: &str) {
    let mount = seq(&c["volumeMounts"])
        .iter()
        .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
        .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
        .unwrap_or_else(|| panic!("{what} ({path:?}) is on no volume"));
    let claims: Vec<&str> = seq(&sts["spec"]["volumeClaimTemplates"])
        .iter()
        .map(|t| t["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(
        claims.contains(&mount["name"].as_str().unwrap()),
        "{what} ({path:?}) must be on a persistent volume (volumeClaimTemplates {claims:?})"
    );
}

fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_mapping()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[k.as_str().unwrap()] == v))
}

fn pod_labels(sts: &Value) -> &Value {
    &sts["spec"]["template"]["metadata"]["labels"]
}

fn redis_target(store: &str) -> (String, u64) {
    let u = reqwest::Url::parse(store).unwrap();
    (
        u.host_str().unwrap().to_string(),
        u64::from(u.port().unwrap_or(6379)),
    )
}

/// The env variable a `${VAR}` in the store URL's password names.
fn password_var(text: &str) -> String {
    let store = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("store: "))
        .expect("a store line");
    let at = store
        .find("${")
        .expect("the store URL carries the Redis password");
    store[at + 2..store[at..].find('}').unwrap() + at].to_string()
}

/// Liveness `/livez`, readiness `/readyz` (not `?settle`: an RPC blip must not empty the
/// Service), both on the admin port.
fn assert_probes(c: &Value) {
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/livez")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "admin", "{probe}");
    }
}

fn check_overlay(name: &str) -> Vec<Value> {
    let docs = render(&root().join(KUBE).join("overlays").join(name));
    let prod = name == "prod";

    // --- the seller ---
    let seller = find(&docs, "StatefulSet", "x402-seller");
    let seller_cm = find(&docs, "ConfigMap", "x402-sidecar-config");
    let sidecar = container(seller, "x402-sidecar");
    let (cfg, r, seller_env) = resolve_in_pod(seller_cm, sidecar);
    let inbound = r.inbound.seller().expect("inbound is enabled");
    let admin = r.admin.as_ref().expect("admin is enabled");
    let audit = r.audit.as_ref().expect("audit is enabled");
    assert_eq!(named_port(sidecar, "x402"), Some(port_of(&inbound.listen)));
    assert_eq!(named_port(sidecar, "admin"), Some(port_of(&admin.listen)));
    let advisor = container(seller, "advisor");
    let listen = strs(&advisor["args"])[2];
    assert_eq!(
        port_of(listen),
        u64::from(inbound.upstream.url.port().unwrap())
    );
    let secret_env = cfg
        .inbound
        .upstream
        .secret_env
        .clone()
        .expect("upstream.secret_env");
    assert!(
        pod_env(advisor).vars.contains_key(&secret_env),
        "the advisor reads {secret_env}"
    );
    assert_probes(sidecar);
    let args = strs(&sidecar["args"]);
    let config_mount = seq(&sidecar["volumeMounts"])
        .iter()
        .find(|m| m["name"] == "config")
        .unwrap()["mountPath"]
        .as_str()
        .unwrap();
    assert_eq!(
        args[..3],
        ["run", "--config", &format!("{config_mount}/sidecar.yaml")]
    );
    assert_on_pvc(seller, sidecar, &audit.dir, "the seller's audit journal");
    let f = &cfg.facilitators[0];
    for k in f
        .settlers
        .iter()
        .chain(std::iter::once(&f.settler))
        .filter_map(|k| k.key_env.as_ref())
    {
        assert!(
            seller_env.from_secret.contains_key(k),
            "settler key {k} comes from a Secret"
        );
    }
    let replicas = seller["spec"]["replicas"].as_u64().unwrap_or(1);
    if replicas > 1 {
        assert!(
            r.store.to_string().starts_with("redis://"),
            "replicas share their nonces through Redis"
        );
    }
    if prod {
        assert!(
            replicas >= 2,
            "production runs more than one seller replica"
        );
        assert_eq!(
            r.inbound.routes()[0].offers[0].network.to_string(),
            "eip155:8453"
        );
    }
    let grace = seller["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(grace > r.server.grace_period_seconds);
    // The public Service: the paid port only, to the seller pods.
    let public = find(&docs, "Service", "x402-sidecar");
    assert!(selects(&public["spec"]["selector"], pod_labels(seller)));
    assert_eq!(
        seq(&public["spec"]["ports"]).len(),
        1,
        "admin is not public"
    );
    assert_eq!(public["spec"]["ports"][0]["targetPort"], "x402");
    let pdb = find(&docs, "PodDisruptionBudget", "x402-seller");
    assert!(selects(
        &pdb["spec"]["selector"]["matchLabels"],
        pod_labels(seller)
    ));
    assert!(
        pdb["spec"]["minAvailable"].as_u64().unwrap() < replicas,
        "a PodDisruptionBudget of every replica would block node drains"
    );

    // --- Redis: password, append-only file on a volume; the stores point at it ---
    let redis = find(&docs, "StatefulSet", "x402-redis");
    let redis_c = container(redis, "redis");
    let redis_args = strs(&redis_c["args"]);
    let arg_after = |flag: &str| {
        redis_args
            .iter()
            .position(|a| *a == flag)
            .map(|i| redis_args[i + 1])
            .unwrap_or_else(|| panic!("redis-server {flag} is not set"))
    };
    assert_eq!(arg_after("--appendonly"), "yes");
    assert_eq!(arg_after("--maxmemory-policy"), "noeviction");
    let pass_env = arg_after("--requirepass")
        .trim_start_matches("$(")
        .trim_end_matches(')');
    let redis_env = pod_env(redis_c);
    let redis_secret = redis_env
        .from_secret
        .get(pass_env)
        .expect("the Redis password comes from a Secret");
    let data_dir = arg_after("--dir");
    assert_on_pvc(
        redis,
        redis_c,
        Path::new(data_dir),
        "Redis's append-only file",
    );
    let redis_svc = find(&docs, "Service", "x402-redis");
    assert!(selects(&redis_svc["spec"]["selector"], pod_labels(redis)));
    let redis_at = (
        "x402-redis".to_string(),
        redis_svc["spec"]["ports"][0]["port"].as_u64().unwrap(),
    );

    // --- the buyer: roma-01 with the sidecar next to it ---
    let buyer = find(&docs, "StatefulSet", "roma-01");
    assert_eq!(
        buyer["spec"]["replicas"].as_u64().unwrap_or(1),
        1,
        "one ledger writer"
    );
    let buyer_cm = find(&docs, "ConfigMap", "x402-buyer-config");
    let bside = container(buyer, "x402-sidecar");
    let (_, br, buyer_env) = resolve_in_pod(buyer_cm, bside);
    assert!(br.outbound.is_some(), "outbound is enabled");
    // The fields below hold no ${VAR}: read as written.
    let out: Value =
        serde_yaml::from_str(buyer_cm["data"]["sidecar.yaml"].as_str().unwrap()).unwrap();
    let out = &out["outbound"];
    let listen: std::net::SocketAddr = out["listen"].as_str().unwrap().parse().unwrap();
    let roma = container(buyer, "roma-01");
    let roma_env = pod_env(roma);
    let url = reqwest::Url::parse(&roma_env.vars["X402_OUTBOUND_URL"]).unwrap();
    assert_eq!(
        url.host_str(),
        Some("127.0.0.1"),
        "roma-01 reaches its sidecar in the pod"
    );
    assert_eq!(url.port(), Some(listen.port()));
    assert!(
        listen.ip().is_loopback(),
        "only roma-01, in the pod, may ask the buyer to pay"
    );
    assert!(
        !roma_env.vars.keys().any(|k| k.contains("PRIVATE_KEY")),
        "the buyer key is in the sidecar container only"
    );
    let fb =
        reqwest::Url::parse(out["fallback"]["url"].as_str().expect("a local fallback")).unwrap();
    let fb_advisor = container(buyer, "advisor");
    assert_eq!(
        u64::from(fb.port().unwrap()),
        port_of(strs(&fb_advisor["args"])[2])
    );
    assert!(
        buyer_env
            .from_secret
            .contains_key(out["wallet"]["key_env"].as_str().unwrap())
    );
    let ledger = Path::new(out["ledger_path"].as_str().unwrap());
    assert_on_pvc(buyer, bside, ledger, "the buyer's ledger");
    assert_on_pvc(
        buyer,
        bside,
        &br.audit.as_ref().unwrap().dir,
        "the buyer's journal",
    );
    assert_probes(bside);
    assert_eq!(
        named_port(bside, "admin"),
        Some(port_of(&br.admin.as_ref().unwrap().listen))
    );
    // Neither side's keys reach the other's pod.
    let seller_secrets: Vec<&String> = seller_env.from_secret.values().map(|(s, _)| s).collect();
    let buyer_secrets: Vec<&String> = buyer_env.from_secret.values().map(|(s, _)| s).collect();
    assert!(!buyer_secrets.contains(&&"x402-sidecar-secrets".to_string()));
    assert!(!seller_secrets.contains(&&"x402-buyer-secrets".to_string()));
    // Both stores: the Redis Service, with the password Redis requires.
    for (cm, env, store) in [
        (seller_cm, &seller_env, r.store.to_string()),
        (buyer_cm, &buyer_env, br.store.to_string()),
    ] {
        assert_eq!(redis_target(&store), redis_at);
        let var = password_var(cm["data"]["sidecar.yaml"].as_str().unwrap());
        assert_eq!(
            env.from_secret.get(&var),
            Some(redis_secret),
            "{var}: Redis's own password"
        );
    }

    // --- network policies ---
    let policies: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "NetworkPolicy")
        .collect();
    let policy_of = |sts: &Value| {
        *policies
            .iter()
            .find(|p| selects(&p["spec"]["podSelector"]["matchLabels"], pod_labels(sts)))
            .unwrap_or_else(|| panic!("no NetworkPolicy selects {:?}", sts["metadata"]["name"]))
    };
    for sts in [seller, buyer, redis] {
        let p = policy_of(sts);
        assert_eq!(strs(&p["spec"]["policyTypes"]), ["Ingress", "Egress"]);
        for rule in seq(&p["spec"]["ingress"]) {
            let ports: Vec<&Value> = seq(&rule["ports"]).iter().map(|x| &x["port"]).collect();
            if ports.iter().any(|x| *x == "admin") {
                assert!(
                    !seq(&rule["from"]).is_empty(),
                    "admin ports are never public"
                );
            }
        }
    }
    let public_rule = seq(&policy_of(seller)["spec"]["ingress"])
        .iter()
        .any(|rule| {
            rule["from"].is_null() && seq(&rule["ports"]).iter().any(|x| x["port"] == "x402")
        });
    assert!(public_rule, "the paid port is open to buyers");
    assert!(
        seq(&policy_of(buyer)["spec"]["ingress"])
            .iter()
            .all(|rule| !rule["from"].is_null()),
        "nobody outside may reach the buyer pod"
    );
    let redis_from: Vec<&Value> = seq(&policy_of(redis)["spec"]["ingress"])
        .iter()
        .flat_map(|rule| seq(&rule["from"]))
        .collect();
    for client in [seller, buyer] {
        assert!(
            redis_from
                .iter()
                .any(|f| selects(&f["podSelector"]["matchLabels"], pod_labels(client))),
            "{:?} may reach Redis",
            client["metadata"]["name"]
        );
        let egress = seq(&policy_of(client)["spec"]["egress"]);
        assert!(
            egress.iter().any(|rule| seq(&rule["to"])
                .iter()
                .any(|t| selects(&t["podSelector"]["matchLabels"], pod_labels(redis)))),
            "{:?} may call Redis",
            client["metadata"]["name"]
        );
        assert!(
            egress
                .iter()
                .any(|rule| seq(&rule["ports"]).iter().any(|x| x["port"] == 53)),
            "DNS"
        );
    }
    assert!(redis_from.len() == 2, "only the sidecars reach Redis");

    // --- monitoring (production) ---
    let monitors: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ServiceMonitor")
        .collect();
    assert_eq!(
        monitors.is_empty(),
        !prod,
        "production ships monitoring, development does not"
    );
    for m in monitors {
        let port = m["spec"]["endpoints"][0]["port"].as_str().unwrap();
        assert_eq!(m["spec"]["endpoints"][0]["path"], "/metrics");
        for (svc, sts) in [("x402-seller-pods", seller), ("roma-01-pods", buyer)] {
            let s = find(&docs, "Service", svc);
            assert!(
                selects(
                    &m["spec"]["selector"]["matchLabels"],
                    &s["metadata"]["labels"]
                ),
                "{svc} is scraped"
            );
            assert!(selects(&s["spec"]["selector"], pod_labels(sts)));
            assert!(
                seq(&s["spec"]["ports"])
                    .iter()
                    .any(|p| p["name"] == port && p["targetPort"] == "admin")
            );
        }
        let rules = find(&docs, "PrometheusRule", "x402-sidecar");
        let exprs: Vec<String> = seq(&rules["spec"]["groups"])
            .iter()
            .flat_map(|g| seq(&g["rules"]))
            .map(|r| r["expr"].as_str().unwrap().to_string())
            .collect();
        for metric in [
            "x402_settlements_total",
            "x402_settler_gas_floor_wei",
            "x402_audit_spill_pending",
            "x402_breaker_state",
            "x402_buyer_budget_limit_atomic",
        ] {
            assert!(
                exprs.iter().any(|e| e.contains(metric)),
                "an alert on {metric}"
            );
        }
        let dash = find(&docs, "ConfigMap", "x402-sidecar-dashboard");
        assert_eq!(dash["metadata"]["labels"]["grafana_dashboard"], "1");
    }
    docs
}

fn write_docs(dir: &Path, name: &str, docs: &[Value]) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    // As JSON documents (valid YAML): no YAML 1.1 reader turns "0x…" or "yes" into a number or
    // a boolean on the way.
    let text: Vec<String> = docs
        .iter()
        .map(|d| serde_json::to_string(d).unwrap() + "\n")
        .collect();
    std::fs::write(&path, text.join("---\n")).unwrap();
    path
}

/// scripts/validate-deploy.py on `files`: (passed, its output). None when .venv-deploy is not
/// there (then `X402_REQUIRE_DEPLOY=1`, as `make test` sets, fails the test).
fn validate(files: &[PathBuf]) -> Option<(bool, String)> {
    let py = root().join(".venv-deploy/bin/python");
    if !py.exists() {
        assert!(
            std::env::var("X402_REQUIRE_DEPLOY").is_err(),
            "X402_REQUIRE_DEPLOY is set but .venv-deploy is missing: run scripts/setup-deploy.sh"
        );
        eprintln!("skipping the strict validators: run scripts/setup-deploy.sh");
        return None;
    }
    let out = std::process::Command::new(py)
        .arg(root().join("scripts/validate-deploy.py"))
        .args(files)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.success(), text))
}

#[test]
fn kubernetes_overlays_agree_with_the_code_and_pass_the_strict_validators() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = vec![root().join(KUBE).join("secret.example.yaml")];
    for overlay in ["dev", "prod"] {
        let docs = check_overlay(overlay);
        files.push(write_docs(tmp.path(), overlay, &docs));
    }
    if let Some((ok, out)) = validate(&files) {
        assert!(ok, "{out}");
    }
}

#[test]
fn the_strict_validators_refuse_what_a_cluster_would_drop_or_reject() {
    let docs = render(&root().join(KUBE).join("overlays/prod"));
    let tmp = tempfile::tempdir().unwrap();
    let mut cases: Vec<(&str, Vec<Value>)> = Vec::new();
    // A misspelt probe (Kubernetes would drop it silently: no readiness check at all).
    let mut d = docs.clone();
    let sts = d
        .iter_mut()
        .find(|x| x["kind"] == "StatefulSet" && x["metadata"]["name"] == "x402-seller")
        .unwrap();
    let c = &mut sts["spec"]["template"]["spec"]["containers"][1];
    let probe = c
        .as_mapping_mut()
        .unwrap()
        .remove("readinessProbe")
        .unwrap();
    c.as_mapping_mut()
        .unwrap()
        .insert("readinesProbe".into(), probe);
    cases.push(("readinesProbe", d));
    // An alert with `fo:` for `for:` (it would fire at once), and one whose PromQL is broken.
    let mut d = docs.clone();
    let rule = d
        .iter_mut()
        .find(|x| x["kind"] == "PrometheusRule")
        .unwrap();
    let r0 = &mut rule["spec"]["groups"][0]["rules"][1];
    let for_ = r0.as_mapping_mut().unwrap().remove("for").unwrap();
    r0.as_mapping_mut().unwrap().insert("fo".into(), for_);
    rule["spec"]["groups"][0]["rules"][0]["expr"] =
        Value::from("sum by (pod (x402_settlements_total)");
    cases.push(("fo", d));
    // A ServiceMonitor endpoint field that does not exist.
    let mut d = docs.clone();
    let m = d
        .iter_mut()
        .find(|x| x["kind"] == "ServiceMonitor")
        .unwrap();
    m["spec"]["endpoints"][0]
        .as_mapping_mut()
        .unwrap()
        .insert("scrapeIntervl".into(), "30s".into());
    cases.push(("scrapeIntervl", d));
    // A dashboard query that does not parse.
    let mut d = docs;
    let dash = d
        .iter_mut()
        .find(|x| x["metadata"]["name"] == "x402-sidecar-dashboard")
        .unwrap();
    let text = dash["data"]["x402-sidecar.json"]
        .as_str()
        .unwrap()
        .replacen("sum by (outcome)", "sum by (outcome", 1);
    dash["data"]["x402-sidecar.json"] = Value::from(text);
    cases.push(("dashboard", d));
    for (name, docs) in cases {
        let f = write_docs(tmp.path(), name, &docs);
        let Some((ok, out)) = validate(&[f]) else {
            return;
        };
        assert!(!ok, "{name}: the validator passed a broken file:\n{out}");
        let expect = match name {
            "fo" => vec![".fo: unknown field", "PromQL does not parse"],
            "dashboard" => vec!["targets[0].expr: PromQL does not parse"],
            other => vec![other],
        };
        for e in expect {
            assert!(out.contains(e), "{name}: {e} not reported:\n{out}");
        }
    }
}
