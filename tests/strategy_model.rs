//! The model step against local servers: a scripted OpenAI-compatible endpoint (every way a
//! reply can go wrong) and a server that accepts connections and never answers (timeout and
//! circuit breaker). In every failure the engine's answer stands and the metadata says why.
//! The real-model test is tests/strategy_llm.rs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use x402_sidecar::advisor::SEED_EXAMPLE;
use x402_sidecar::advisor::contract::{self, StrategyRequest};
use x402_sidecar::advisor::engine;
use x402_sidecar::advisor::model::{ModelClient, ModelConfig, ModelError};
use x402_sidecar::advisor::server::{Advisor, SECRET_HEADER};
use x402_sidecar::devkit::standin::{self, Request, Response};

const SECRET: &str = "model-test-secret-0123456789";

/// An OpenAI-compatible endpoint that answers from a script and keeps every request body.
struct Scripted {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    auth: Arc<Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn completion(content: &str, finish: &str) -> Response {
    Response::Body(
        200,
        json!({"id": "chatcmpl-test", "object": "chat.completion", "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}]})
        .to_string(),
    )
}

async fn scripted(replies: Vec<Response>) -> Scripted {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let queue = Arc::new(Mutex::new(VecDeque::from(replies)));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let auth = Arc::new(Mutex::new(Vec::new()));
    let (q, b, a) = (queue.clone(), bodies.clone(), auth.clone());
    let handler: standin::Handler = Arc::new(move |req: Request| {
        assert_eq!(req.path, "/v1/chat/completions");
        b.lock()
            .unwrap()
            .push(serde_json::from_slice(&req.body).unwrap());
        a.lock()
            .unwrap()
            .push(req.header("authorization").map(str::to_string));
        let next = q
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Response::Body(500, "{}".into()));
        Box::pin(async move { next })
    });
    let task = tokio::spawn(standin::serve(listener, handler));
    Scripted {
        url,
        bodies,
        auth,
        task,
    }
}

fn seed() -> StrategyRequest {
    contract::parse(SEED_EXAMPLE.as_bytes()).unwrap()
}

fn config(url: &str) -> ModelConfig {
    let mut c = ModelConfig::new(url, "fake-model");
    c.timeout = Duration::from_secs(5);
    c
}

const GOOD: &str = r#"{"summary": "The account runs 13.91x against a 3x cap: cut both sides to $3,375.00.", "steps": ["Reduce the BTC-PERP short by 0.445565.", "Reduce the ETH-PERP long by 0.128742."], "riskNotes": ["Entry prices stand in for marks."]}"#;
const INVENTED: &str = r#"{"summary": "Reduce ETH long exposure by 25% and hedge BTC with call options.", "steps": ["Close 0.3 ETH perpetual long."], "riskNotes": ["Monitor funding over the next 6h."]}"#;

#[tokio::test]
async fn grounded_words_replace_the_engine_text_but_never_the_numbers() {
    let server = scripted(vec![completion(GOOD, "stop"), completion(GOOD, "stop")]).await;
    let mut cfg = config(&server.url);
    cfg.api_key = Some("sk-test".into());
    let client = ModelClient::new(cfg).unwrap();
    let req = seed();
    let rules = engine::advise(&req);
    let out = client.word(&rules, &req, "mc_test").await;
    let words = out.result.unwrap();
    assert_eq!(out.attempts, 1);
    assert_eq!(words.steps.len(), 2);
    // What was asked: the bounded schema, temperature 0, the engine's facts, the bearer key.
    let body = server.bodies.lock().unwrap()[0].clone();
    assert_eq!(body["model"], "fake-model");
    assert_eq!(body["temperature"], 0);
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(
        body["response_format"]["json_schema"]["schema"]["properties"]["summary"]["maxLength"],
        x402_sidecar::advisor::model::SUMMARY_MAX
    );
    let user = body["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("13.91x") && user.contains("BUYER TEXT"));
    assert_eq!(
        server.auth.lock().unwrap()[0].as_deref(),
        Some("Bearer sk-test")
    );

    // Through the advisor: the words are the model's, actions and analysis are the engine's.
    let advisor = Advisor::new(SECRET, Some(client)).unwrap();
    let a = advisor.answer(&req).await;
    assert_eq!(a.metadata.model, "rules-v1+fake-model");
    assert_eq!(a.metadata.model_fallback, None);
    assert!(a.strategy.summary.starts_with("The account runs 13.91x"));
    assert_eq!(a.strategy.actions, rules.actions);
    assert_eq!(a.strategy.analysis, rules.analysis);
    // The engine's risk notes are facts and stay; the model's are added.
    for n in &rules.risk_notes {
        assert!(a.strategy.risk_notes.contains(n));
    }
    assert!(
        a.strategy
            .risk_notes
            .contains(&"Entry prices stand in for marks.".to_string())
    );
}

#[tokio::test]
async fn invented_numbers_get_one_repair_then_the_engine_stands() {
    // First reply invents numbers; the repair request says why; the second reply is good.
    let server = scripted(vec![completion(INVENTED, "stop"), completion(GOOD, "stop")]).await;
    let client = ModelClient::new(config(&server.url)).unwrap();
    let req = seed();
    let rules = engine::advise(&req);
    let out = client.word(&rules, &req, "mc_test").await;
    assert!(out.result.is_ok(), "{:?}", out.result);
    assert_eq!(out.attempts, 2);
    let repair = server.bodies.lock().unwrap()[1].clone();
    let last = repair["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["role"], "user");
    assert!(
        last["content"]
            .as_str()
            .unwrap()
            .contains("not in the facts")
    );

    // Two bad replies: fallback, and nothing of the model's text is served.
    let server = scripted(vec![
        completion(INVENTED, "stop"),
        completion(INVENTED, "stop"),
    ])
    .await;
    let advisor =
        Advisor::new(SECRET, Some(ModelClient::new(config(&server.url)).unwrap())).unwrap();
    let a = advisor.answer(&req).await;
    assert_eq!(a.metadata.model, "rules-v1");
    assert_eq!(a.metadata.model_fallback.as_deref(), Some("invalid_output"));
    assert_eq!(a.strategy, rules);
    assert_eq!(server.bodies.lock().unwrap().len(), 2, "exactly one repair");
}

#[tokio::test]
async fn every_failure_falls_back_with_its_reason() {
    let req = seed();
    let rules = engine::advise(&req);
    let cases: Vec<(Vec<Response>, &str, usize)> = vec![
        (vec![Response::Body(500, "{}".into())], "http_error", 1),
        (vec![Response::Body(429, "{}".into())], "http_error", 1),
        (
            vec![Response::Body(200, r#"{"object":"error"}"#.into())],
            "bad_reply",
            1,
        ),
        (
            vec![
                completion(&GOOD[..40], "length"),
                completion(&GOOD[..40], "length"),
            ],
            "truncated",
            2,
        ),
        (
            vec![completion("not json", "stop"), completion("{}", "stop")],
            "invalid_output",
            2,
        ),
        (
            vec![Response::Raw(
                b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"choi".to_vec(),
            )],
            "bad_reply",
            1,
        ),
    ];
    for (replies, code, calls) in cases {
        let server = scripted(replies).await;
        let advisor =
            Advisor::new(SECRET, Some(ModelClient::new(config(&server.url)).unwrap())).unwrap();
        let a = advisor.answer(&req).await;
        assert_eq!(
            (
                a.metadata.model.as_str(),
                a.metadata.model_fallback.as_deref()
            ),
            ("rules-v1", Some(code))
        );
        assert_eq!(a.strategy, rules, "{code}: the engine's answer stands");
        assert_eq!(server.bodies.lock().unwrap().len(), calls, "{code}");
    }
    // Nothing listening at all.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = ModelClient::new(config(&format!("http://127.0.0.1:{port}/v1"))).unwrap();
    let out = client.word(&rules, &req, "mc").await;
    assert_eq!(out.result.unwrap_err().code(), "unreachable");
}

/// Accepts connections and never answers; counts them.
async fn hanging_server() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            a.fetch_add(1, Ordering::SeqCst);
            held.push(sock);
        }
    });
    (url, accepted, task)
}

#[tokio::test]
async fn a_hanging_server_times_out_then_the_breaker_stops_calling_it() {
    let (url, accepted, task) = hanging_server().await;
    let mut cfg = config(&url);
    cfg.timeout = Duration::from_millis(300);
    cfg.breaker_failures = 2;
    cfg.breaker_open = Duration::from_millis(700);
    let client = ModelClient::new(cfg).unwrap();
    let req = seed();
    let rules = engine::advise(&req);

    for i in 1..=2 {
        let t = Instant::now();
        let out = client.word(&rules, &req, "mc").await;
        let took = t.elapsed();
        assert_eq!(
            out.result.unwrap_err(),
            ModelError::Timeout(300),
            "call {i}"
        );
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_millis(1500),
            "call {i} took {took:?}"
        );
    }
    assert_eq!(client.breaker_state(), "open");
    let before = accepted.load(Ordering::SeqCst);
    assert_eq!(before, 2);

    // Open: no call at all, an immediate fallback.
    let t = Instant::now();
    let out = client.word(&rules, &req, "mc").await;
    assert_eq!(out.result.unwrap_err(), ModelError::BreakerOpen);
    assert_eq!(out.attempts, 0);
    assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), before);

    // Through the advisor the buyer still gets the whole engine answer, at once.
    let advisor = Advisor::new(SECRET, Some(client)).unwrap();
    let t = Instant::now();
    let a = advisor.answer(&req).await;
    assert!(t.elapsed() < Duration::from_millis(50));
    assert_eq!(a.metadata.model, "rules-v1");
    assert_eq!(a.metadata.model_fallback.as_deref(), Some("breaker_open"));
    assert_eq!(a.strategy, rules);

    // After the open time, one probe goes through (and fails again: open again).
    tokio::time::sleep(Duration::from_millis(750)).await;
    let a = advisor.answer(&req).await;
    assert_eq!(a.metadata.model_fallback.as_deref(), Some("timeout"));
    assert_eq!(accepted.load(Ordering::SeqCst), before + 1);
    let a = advisor.answer(&req).await;
    assert_eq!(a.metadata.model_fallback.as_deref(), Some("breaker_open"));
    assert_eq!(accepted.load(Ordering::SeqCst), before + 1);
    task.abort();
}

#[tokio::test]
async fn the_advisor_over_http_refuses_calls_without_the_secret() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/x402", listener.local_addr().unwrap());
    let advisor = Arc::new(Advisor::rules_only(SECRET).unwrap());
    x402_sidecar::init_tls();
    let task = tokio::spawn(x402_sidecar::advisor::server::serve(listener, advisor));
    let http = reqwest::Client::new();
    let send = |secret: Option<&'static str>, body: &'static str| {
        let mut r = http.post(&url).body(body);
        if let Some(s) = secret {
            r = r.header(SECRET_HEADER, s);
        }
        async move {
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    assert_eq!(send(None, SEED_EXAMPLE).await.0, 401);
    assert_eq!(
        send(Some("wrong-secret-0123456789"), SEED_EXAMPLE).await.0,
        401
    );
    let (status, v) = send(Some(SECRET), SEED_EXAMPLE).await;
    assert_eq!(status, 200);
    assert_eq!(v["metadata"]["model"], "rules-v1");
    assert_eq!(v["strategy"]["actions"][1]["action"], "reduce");
    let (status, v) = send(Some(SECRET), r#"{"account":{"platform":"ftx"}}"#).await;
    assert_eq!(
        (status, v["details"][0]["path"].as_str()),
        (400, Some("account.platform"))
    );
    let health = http
        .get(url.replace("/x402", "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    // A body over the cap is refused before anything is read into memory.
    let big = http
        .post(&url)
        .header(SECRET_HEADER, SECRET)
        .body(vec![b' '; standin::MAX_BODY + 1])
        .send()
        .await;
    assert!(big.map(|r| r.status().as_u16() == 413).unwrap_or(true));
    task.abort();
}
