//! Every call's caller, checked before any service sees the request: the token in its
//! `authorization` header and the name in its client certificate, against the role its method
//! needs. The caller then travels in the request's extensions (`caller_of`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::coordinator::access::{Access, require};
use crate::domain::{Caller, Role};

/// The roles that may call each method (any one of them will do; `admin` may call all).
fn method_roles(service: &str, method: &str) -> Option<&'static [Role]> {
    use Role::{Operate, Read, Submit, Worker};
    let roles: &'static [Role] = match (service, method) {
        ("celeritas.v1.TaskService", "SubmitTask" | "SubmitTasks") => &[Submit],
        ("celeritas.v1.TaskService", "GetTask" | "StreamProgress") => &[Submit, Read, Worker],
        ("celeritas.v1.TaskService", "ListRecords" | "ListTasks") => &[Read, Worker],
        (
            "celeritas.v1.TaskService",
            "CancelTask" | "CancelTasks" | "RetryTasks" | "PurgeQueue" | "PauseQueue" | "PauseTree"
            | "SetRateLimit" | "ClearRateLimit" | "ResumeTree" | "ResumeQueue" | "RequeueTask"
            | "FailTask",
        ) => &[Operate],
        ("celeritas.v1.InspectService", "CloseIdleConnections") => &[Operate],
        ("celeritas.v1.InspectService", _) => &[Read],
        ("celeritas.v1.ScheduleService", "ListSchedules") => &[Read],
        ("celeritas.v1.ScheduleService", _) => &[Operate],
        ("celeritas.v1.FileService", "Upload") => &[Submit],
        ("celeritas.v1.FileService", "Download") => &[Read, Worker],
        ("celeritas.v1.FileService", "GetFile") => &[Submit, Read, Worker],
        ("celeritas.v1.FileService", "DeleteFile") => &[Submit, Operate],
        ("celeritas.v1.WorkerService", "Connect") => &[Worker],
        _ => return None,
    };
    Some(roles)
}

/// The caller a request was authenticated as. Every request past the layer has one; a request
/// built without the layer (in tests of a service alone) is served as anonymous.
pub fn caller_of<T>(request: &tonic::Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(|| Caller::anonymous(None))
}

/// The layer that authenticates every call.
#[derive(Clone)]
pub struct AuthLayer {
    access: Arc<Access>,
}

impl AuthLayer {
    /// Checks calls against `access`.
    pub fn new(access: Arc<Access>) -> Self {
        Self { access }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            access: self.access.clone(),
        }
    }
}

/// A service whose calls are authenticated first.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    access: Arc<Access>,
}

impl<S> tower::Service<http::Request<Body>> for Authenticated<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let access = self.access.clone();
        // The clone is the one made ready next; this one was polled ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let question = question(&access, &request);
        Box::pin(async move {
            let decision = match question {
                Question::Open => Ok(None),
                Question::Caller {
                    method,
                    authorization,
                    certificate,
                } => decide(&access, method, authorization, certificate)
                    .await
                    .map(Some),
            };
            match decision {
                Ok(caller) => {
                    if let Some(caller) = caller {
                        request.extensions_mut().insert(caller);
                    }
                    inner.call(request).await
                }
                Err(refusal) => {
                    metrics::counter!("celeritas_refused_requests_total", "reason" => refusal.reason)
                        .increment(1);
                    Ok(refusal.status.into_http())
                }
            }
        })
    }
}

/// Why a call was refused, for the caller and for the metrics.
struct Refusal {
    status: tonic::Status,
    reason: &'static str,
}

/// What a request asks of the layer, taken from it before anything waits.
enum Question {
    /// A call open to anyone: health, and reflection unless it needs a token.
    Open,
    /// A call that needs a caller.
    Caller {
        /// The roles it needs, `None` for a method nobody serves (answered UNIMPLEMENTED by the
        /// router once the caller is known).
        method: Option<(&'static [Role], String)>,
        authorization: Option<http::HeaderValue>,
        certificate: Option<String>,
    },
}

fn question(access: &Access, request: &http::Request<Body>) -> Question {
    let path = request.uri().path();
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    if service == "grpc.health.v1.Health" {
        return Question::Open;
    }
    if service.starts_with("grpc.reflection.") && !access.token_for_reflection() {
        return Question::Open;
    }
    let certificate = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .and_then(|chain| chain.first().and_then(|leaf| certificate_name(leaf)));
    Question::Caller {
        method: method_roles(service, method).map(|roles| (roles, method.to_owned())),
        authorization: request.headers().get(http::header::AUTHORIZATION).cloned(),
        certificate,
    }
}

/// The caller, or why it may not call. A token this coordinator does not know sends it to the
/// store once before the refusal, so a token made a moment ago works at once.
async fn decide(
    access: &Access,
    method: Option<(&'static [Role], String)>,
    authorization: Option<http::HeaderValue>,
    certificate: Option<String>,
) -> Result<Caller, Refusal> {
    let header = authorization.as_ref().map(http::HeaderValue::as_bytes);
    let caller = match access.authenticate(header, certificate.clone()) {
        Err(_) if header.is_some() && access.refresh_after_miss().await => {
            access.authenticate(header, certificate)
        }
        decided => decided,
    }
    .map_err(|error| Refusal {
        status: tonic::Status::from(error),
        reason: "unauthenticated",
    })?;
    if let Some((roles, method)) = method {
        require(&caller, roles, &method).map_err(|error| Refusal {
            status: tonic::Status::from(error),
            reason: "permission_denied",
        })?;
    }
    Ok(caller)
}

/// The name a client certificate gives its holder: the subject's common name, or without one,
/// the first DNS name among its alternative names.
pub fn certificate_name(certificate: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(certificate).ok()?;
    let common_name = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())
        .map(str::to_owned);
    common_name.or_else(|| {
        parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|names| {
                names
                    .value
                    .general_names
                    .iter()
                    .find_map(|name| match name {
                        GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                        _ => None,
                    })
            })
    })
}
