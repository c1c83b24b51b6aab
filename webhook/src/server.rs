//! HTTP: `POST /mutate` (AdmissionReview v1), `/healthz`, `/readyz` over TLS; `/metrics` on its own
//! plain-HTTP listener.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use kube::api::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::admission::{Decision, Policy, mutate};
use crate::index::Index;
use crate::mark::Key;
use crate::metrics::{DecisionLabel, Metrics};
use crate::runtime::Health;

/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct AppState {
    pub policy: Arc<Policy>,
    pub index: Arc<Index>,
    pub metrics: Arc<Metrics>,
    /// Signs the marks of new workspaces.
    pub key: Arc<Key>,
    /// Which controllers are down.
    pub health: Health,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(mutate_route))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode())
            }
        }),
    )
}

async fn readyz(State(s): State<AppState>) -> Response {
    if !s.index.ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "backup index not loaded yet").into_response();
    }
    match s.health.check() {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn mutate_route(State(s): State<AppState>, body: Bytes) -> Response {
    let start = Instant::now();
    let (status, body, decision) = handle(&body, &s.policy, &s.index, &s.key);
    s.metrics.admission_seconds.observe(start.elapsed().as_secs_f64());
    s.metrics.admissions.get_or_create(&DecisionLabel { decision: decision_label(&decision).into() }).inc();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn decision_label(d: &Option<Decision>) -> &'static str {
    match d {
        None => "invalid",
        Some(Decision::NotAWorkspace) => "not-a-workspace",
        Some(Decision::Ephemeral) => "ephemeral",
        Some(Decision::Restore(_)) => "restore",
        Some(Decision::Nothing) => "no-backup",
        Some(Decision::Request) => "request",
    }
}

/// Answers one request body. Always a valid AdmissionReview with `allowed: true` for any
/// AdmissionReview; a 400 for a body that is not one. Never panics (fuzzed in the tests).
pub fn handle(body: &[u8], policy: &Policy, index: &Index, key: &Key) -> (StatusCode, Vec<u8>, Option<Decision>) {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            let msg = serde_json::json!({"error": format!("not an AdmissionReview: {e}")});
            return (StatusCode::BAD_REQUEST, msg.to_string().into_bytes(), None);
        }
    };
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(_) => {
            let resp = AdmissionResponse::invalid("the AdmissionReview has no request");
            return (StatusCode::OK, serde_json::to_vec(&resp.into_review()).unwrap_or_default(), None);
        }
    };
    let (resp, decision) = mutate(&req, policy, index, key, jiff::Timestamp::now());
    if decision != Decision::NotAWorkspace {
        tracing::info!(name = %req.name, dry_run = req.dry_run, decision = ?decision, user = ?req.user_info.username, "admission");
    }
    (StatusCode::OK, serde_json::to_vec(&resp.into_review()).unwrap_or_default(), Some(decision))
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = TowerToHyperService::new(app);
            if let Err(e) = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), service).await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Serves plain HTTP (metrics) until `shutdown` resolves.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::warn!(error = %e, "metrics server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> Policy {
        Policy::new(&["pr-*".into()], None, "kubectl-backup", &[]).unwrap()
    }

    fn valid_review() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Namespace"},
                "resource": {"group": "", "version": "v1", "resource": "namespaces"},
                "name": "pr-1", "operation": "CREATE", "userInfo": {},
                "object": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "pr-1"}}
            }
        })
    }

    #[test]
    fn garbage_gets_a_400_and_a_review_without_request_gets_invalid() {
        let (s, body, d) = handle(b"{not json", &policy(), &Index::default(), &Key::new(&[0; 32]));
        assert_eq!((s, d), (StatusCode::BAD_REQUEST, None));
        assert!(String::from_utf8(body).unwrap().contains("not an AdmissionReview"));
        let (s, body, _) = handle(
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            &policy(),
            &Index::default(),
            &Key::new(&[0; 32]),
        );
        assert_eq!(s, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["response"]["allowed"], false);
    }

    #[test]
    fn a_valid_review_is_answered_with_the_same_uid() {
        let (s, body, d) =
            handle(valid_review().to_string().as_bytes(), &policy(), &Index::default(), &Key::new(&[0; 32]));
        assert_eq!((s, d), (StatusCode::OK, Some(Decision::Ephemeral)));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["response"]["uid"], "u");
        assert_eq!(v["response"]["allowed"], true);
        assert_eq!(v["response"]["patchType"], "JSONPatch");
    }

    /// Random JSON values placed anywhere in a review, and random bytes: never a panic.
    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            ".{0,20}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-zA-Z/._-]{0,12}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = handle(&bytes, &policy(), &Index::default(), &Key::new(&[0; 32]));
        }

        #[test]
        fn mangled_reviews_never_panic(
            path in prop::sample::select(vec!["request", "request/object", "request/object/metadata", "request/object/metadata/labels",
                "request/object/metadata/annotations", "request/object/metadata/name", "request/resource", "request/operation",
                "request/name", "request/uid", "request/dryRun", "request/kind"]),
            value in arb_json(),
        ) {
            let mut review = valid_review();
            let mut slot = &mut review;
            for key in path.split('/') {
                slot = &mut slot[key];
            }
            *slot = value;
            let (status, body, _) = handle(review.to_string().as_bytes(), &policy(), &Index::default(), &Key::new(&[0; 32]));
            if status == StatusCode::OK {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                prop_assert_eq!(&v["kind"], "AdmissionReview");
            } else {
                prop_assert_eq!(status, StatusCode::BAD_REQUEST);
            }
        }
    }
}
