//! The deployment files agree with the code: the embedded sidecar.yaml files pass the
//! sidecar's own validation, and ports, probes, volumes and names line up across the
//! compose file and the Kubernetes manifests. (No cluster or Docker engine runs here.)

use std::path::Path;

use serde_yaml::Value;
use x402_sidecar::config;

fn yaml_docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    text.split("\n---")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// Values for the `${VAR}`s of the deployment configs, as an operator would set them.
fn env(k: &str) -> Option<String> {
    match k {
        "X402_PAY_TO" => Some("0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into()),
        "X402_CHALLENGE_SECRET" => Some("a-long-shared-challenge-secret".into()),
        "X402_RPC_URL" => Some("https://sepolia.base.org".into()),
        _ => None,
    }
}

fn resolve(text: &str) -> config::Resolved {
    load(text).1
}

/// The file as written (its sections) and resolved.
fn load(text: &str) -> (config::Config, config::Resolved) {
    // The settler key is read from the process environment: a random, non-devnet key.
    let key = format!(
        "0x{}",
        x402_sidecar::util::hex(&alloy_signer_local::PrivateKeySigner::random().to_bytes()[..])
    );
    // SAFETY: a test-only variable set before any other thread reads it in this test binary.
    unsafe { std::env::set_var("X402_SETTLER_KEY", key) };
    // The second key of a settler pool: another random key.
    let key2 = format!(
        "0x{}",
        x402_sidecar::util::hex(&alloy_signer_local::PrivateKeySigner::random().to_bytes()[..])
    );
    // SAFETY: as above.
    unsafe { std::env::set_var("X402_SETTLER_KEY_2", key2) };
    // The shared secret of the built-in advisor (inbound.upstream.secret_env).
    // SAFETY: as above.
    unsafe { std::env::set_var("X402_ADVISOR_SECRET", "a-long-advisor-secret-0123") };
    let cfg = config::parse(text, &env).unwrap_or_else(|p| panic!("{p:?}"));
    let r = cfg.resolve().unwrap_or_else(|p| panic!("{p:#?}"));
    (cfg, r)
}

fn port_of(listen: &str) -> u64 {
    listen.rsplit(':').next().unwrap().parse().unwrap()
}

#[path = "deploy/kube.rs"]
mod kube;
#[test]
fn the_compose_file_agrees_with_its_sidecar_configuration() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/sidecar.compose.yaml"),
    )
    .unwrap();
    let (cfg, r) = load(&text);
    let seller = r.inbound.seller().expect("inbound is enabled");
    let compose: Value = serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose.yaml"))
            .unwrap(),
    )
    .unwrap();
    let services = &compose["services"];
    let sidecar = &services["sidecar"];
    let published: Vec<&str> = sidecar["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let inbound = port_of(&seller.listen);
    assert!(
        published
            .iter()
            .any(|p| p.ends_with(&format!(":{inbound}"))),
        "{published:?} publishes inbound.listen"
    );
    // The upstream is the built-in advisor service, on the port it listens on.
    let up = &seller.upstream.url;
    assert_eq!(up.host_str(), Some("advisor"));
    let roma_cmd: Vec<&str> = services["advisor"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        roma_cmd
            .last()
            .unwrap()
            .ends_with(&format!(":{}", up.port().unwrap()))
    );
    // The store is the compose Redis; the config is mounted where the command reads it.
    assert!(r.store.to_string().starts_with("redis://redis:"));
    assert!(services["redis"].is_mapping());
    let cmd: Vec<&str> = sidecar["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let mounted = sidecar["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|v| v.as_str().unwrap().ends_with(&format!(":{}:ro", cmd[2])));
    assert!(mounted, "the config file is mounted at {}", cmd[2]);

    // The optional collector (profile `tracing`) listens where the sidecar's otlp section sends.
    assert!(
        r.otlp.is_none(),
        "export is off until the operator turns it on"
    );
    let otlp = reqwest::Url::parse(&cfg.otlp.endpoint).unwrap();
    let collector = &services[otlp.host_str().unwrap()];
    assert_eq!(collector["profiles"][0], "tracing");
    let mount = collector["volumes"][0].as_str().unwrap();
    let file = mount.split(':').next().unwrap().trim_start_matches("./");
    let conf: Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("deploy")
                .join(file),
        )
        .unwrap(),
    )
    .unwrap();
    let listen = conf["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
        .as_str()
        .unwrap();
    assert_eq!(port_of(listen), u64::from(otlp.port().unwrap()));
    assert_eq!(otlp.path(), "/v1/traces");
    let pipeline = &conf["service"]["pipelines"]["traces"]["receivers"];
    assert_eq!(
        pipeline[0], "otlp",
        "the collector's traces pipeline reads OTLP"
    );
    let exposed: Vec<String> = collector["expose"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(exposed.contains(&otlp.port().unwrap().to_string()));
}

#[test]
fn the_sample_configuration_is_complete_and_valid() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("sidecar.yaml.example"))
            .unwrap();
    let r = resolve(&text);
    // Everything is off by default in the sample, as in the code.
    assert!(r.inbound.seller().is_none() && r.outbound.is_none());
    // Switched on, the sample's paid route is complete.
    let on = text.replacen("enabled: false", "enabled: true", 1);
    let r = resolve(&on);
    assert!(r.inbound.seller().is_some());
    assert!(
        r.inbound
            .routes()
            .iter()
            .any(|route| !route.offers.is_empty()),
        "a paid route"
    );
}

/// roma-01's own settings (its backend/.env names), as a roma-01 operator has them, plus the
/// few the sidecar adds.
fn roma01_env(k: &str) -> Option<String> {
    Some(
        match k {
            "X402_PAY_TO_ADDRESS" => "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "X402_PRICE_USDC" => "5.0",
            "X402_NETWORK" => "base-sepolia",
            "X402_FACILITATOR_URL" => "https://facilitator.example/x402",
            "REMOTE_X402_ENDPOINT" => "https://seller.example/x402",
            "REMOTE_X402_PRICE_CAP" => "0.05",
            "REMOTE_FALLBACK_MODE" => "wait",
            "X402_SELLER_PAY_TO" => "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
            "X402_CHALLENGE_SECRET" => "a-long-shared-challenge-secret",
            _ => return None,
        }
        .to_string(),
    )
}

fn roma01_file(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/roma01")
            .join(name),
    )
    .unwrap()
}

#[test]
fn the_roma01_example_reads_roma01s_own_settings() {
    // SAFETY: test-only variables (keys are read from the process environment).
    unsafe {
        std::env::set_var(
            "REMOTE_X402_PRIVATE_KEY",
            format!(
                "0x{}",
                x402_sidecar::util::hex(
                    &alloy_signer_local::PrivateKeySigner::random().to_bytes()[..]
                )
            ),
        );
        std::env::set_var("X402_ADVISOR_SECRET", "a-long-advisor-secret-0123");
        std::env::set_var("X402_OWNER_HASH_KEY", "a-long-owner-hash-key-0123");
    }
    let seller = config::parse(&roma01_file("seller.yaml"), &roma01_env)
        .unwrap_or_else(|p| panic!("{p:?}"))
        .resolve()
        .unwrap_or_else(|p| panic!("{p:#?}"));
    let s = seller.inbound.seller().expect("inbound is enabled");
    let offer = &s.routes[0].offers[0];
    // X402_PRICE_USDC=5.0 is 5 USDC; X402_NETWORK=base-sepolia is eip155:84532.
    assert_eq!(offer.amount, alloy_primitives::U256::from(5_000_000u64));
    assert_eq!(offer.network, "eip155:84532");
    assert_eq!(
        offer.pay_to.to_string(),
        "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    );
    assert_eq!(offer.max_timeout_seconds, 120);
    assert_eq!(offer.facilitator, "https://facilitator.example/x402");
    let buyer = config::parse(&roma01_file("buyer.yaml"), &roma01_env)
        .unwrap_or_else(|p| panic!("{p:?}"))
        .resolve()
        .unwrap_or_else(|p| panic!("{p:#?}"));
    assert!(buyer.outbound.is_some() && buyer.inbound.seller().is_none());
    // roma-01 has no price cap by default; the sidecar pays nothing without one.
    let no_cap = |k: &str| {
        (k != "REMOTE_X402_PRICE_CAP")
            .then(|| roma01_env(k))
            .flatten()
    };
    let p = config::parse(&roma01_file("buyer.yaml"), &no_cap).unwrap_err();
    assert!(
        p.iter()
            .any(|p| p.message.contains("REMOTE_X402_PRICE_CAP")),
        "{p:?}"
    );
    // Every variable the files read is in the example .env, and the compose file mounts them.
    let example = roma01_file(".env.example");
    for file in ["seller.yaml", "buyer.yaml"] {
        let text = roma01_file(file);
        for var in text.split("${").skip(1) {
            let name = var.split([':', '}']).next().unwrap();
            assert!(
                example.contains(name),
                "{file} reads {name}, not in .env.example"
            );
        }
        for key_env in ["REMOTE_X402_PRIVATE_KEY", "X402_ADVISOR_SECRET"] {
            assert!(example.contains(key_env));
        }
    }
    let compose = &yaml_docs("deploy/roma01/compose.yaml")[0];
    for (svc, file) in [
        ("sidecar-sell", "seller.yaml"),
        ("sidecar-buy", "buyer.yaml"),
    ] {
        let vols = compose["services"][svc]["volumes"].as_sequence().unwrap();
        assert!(
            vols.iter()
                .any(|v| v.as_str().unwrap().starts_with(&format!("./{file}:"))),
            "{svc}"
        );
    }
}

/// The image builds from what the Dockerfile copies: every workspace member and path
/// dependency, every declared bench, and every file the sources embed (`include_str!`) is in a
/// copied directory that the build context (Dockerfile.dockerignore) lets through.
#[test]
fn the_dockerfile_copies_everything_the_build_reads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    let copied: Vec<String> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            parts[..parts.len() - 1]
                .iter()
                .map(|p| p.trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let ignore = std::fs::read_to_string(root.join("deploy/Dockerfile.dockerignore")).unwrap();
    let allowed: Vec<&str> = ignore
        .lines()
        .filter_map(|l| l.strip_prefix('!'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    let is_copied = |path: &str| {
        copied
            .iter()
            .any(|c| path == c || path.starts_with(&format!("{c}/")))
            && allowed
                .iter()
                .any(|a| path == *a || path.starts_with(&format!("{a}/")))
    };
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let mut needed: Vec<String> = vec!["Cargo.toml".into(), "Cargo.lock".into(), "src".into()];
    // `path = "…"` (dependencies, bins, benches) and the workspace members.
    for line in manifest.lines() {
        if let Some(i) = line.find("path = \"") {
            let rest = &line[i + 8..];
            needed.push(rest[..rest.find('"').unwrap()].to_string());
        }
        if let Some(m) = line.trim().strip_prefix("members = [") {
            for member in m.trim_end_matches(']').split(',') {
                let member = member.trim().trim_matches('"');
                if member != "." {
                    needed.push(member.to_string());
                }
            }
        }
    }
    // Benches without a path live at benches/<name>.rs.
    if manifest.contains("[[bench]]") {
        needed.push("benches".into());
    }
    // Files the sources embed, relative to the repository root.
    for dir in ["src", "crates"] {
        for f in walk(&root.join(dir)) {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            for (i, _) in text.match_indices("include_str!(\"") {
                let rest = &text[i + 14..];
                let rel = &rest[..rest.find('"').unwrap()];
                let target = f.parent().unwrap().join(rel);
                let target = std::fs::canonicalize(&target)
                    .unwrap_or_else(|e| panic!("{f:?} embeds {rel}: {e}"));
                let under = target
                    .strip_prefix(std::fs::canonicalize(root).unwrap())
                    .unwrap();
                needed.push(under.to_string_lossy().into_owned());
            }
        }
    }
    for n in &needed {
        assert!(
            is_copied(n),
            "the image build reads {n}, which deploy/Dockerfile does not COPY (or Dockerfile.dockerignore keeps out)"
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}
