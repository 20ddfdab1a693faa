//! Who may call: the tokens a coordinator accepts (the configuration's, and the store's,
//! refreshed every few seconds so a revocation reaches every coordinator), the roles they hold,
//! and which queues each worker identity may consume.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::CoordinatorError;
use crate::config::AuthSettings;
use crate::domain::{
    AcceptedToken, Caller, QueueName, Role, Roles, TokenSecret, ValidationError, find_token,
};
use crate::store::{Store, StoreError};

/// How often the store's tokens are read again: a revoked token stops working within this.
pub const TOKEN_REFRESH: Duration = Duration::from_secs(2);

/// The tokens and rules one coordinator enforces.
pub struct Access {
    settings: AuthSettings,
    configured: Vec<AcceptedToken>,
    accepted: RwLock<Arc<Vec<AcceptedToken>>>,
    /// The store the tokens are refreshed from, once `spawn_refresh` has it.
    store: std::sync::OnceLock<Arc<dyn Store>>,
    /// When an unknown token last sent this coordinator to the store.
    last_miss: std::sync::Mutex<Option<std::time::Instant>>,
}

/// An unknown token sends a coordinator to the store at most this often, so a flood of bad
/// tokens costs the store nothing.
const MISS_REFRESH: Duration = Duration::from_millis(500);

impl std::fmt::Debug for Access {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Access")
            .field("required", &self.settings.required)
            .finish_non_exhaustive()
    }
}

impl Access {
    /// The rules of `[auth]`; the store's tokens join at the first `refresh`.
    pub fn new(settings: &AuthSettings) -> Result<Self, ValidationError> {
        let configured = settings.known_tokens()?;
        Ok(Self {
            settings: settings.clone(),
            accepted: RwLock::new(Arc::new(configured.clone())),
            configured,
            store: std::sync::OnceLock::new(),
            last_miss: std::sync::Mutex::new(None),
        })
    }

    /// Whether calls need a token.
    pub fn required(&self) -> bool {
        self.settings.required
    }

    /// Whether reflection needs a token too.
    pub fn token_for_reflection(&self) -> bool {
        self.settings.required && self.settings.token_for_reflection
    }

    /// Reads the store's tokens again: unrevoked ones are accepted beside the configuration's.
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), StoreError> {
        if !self.settings.required {
            return Ok(());
        }
        let stored = store.tokens().await?;
        let mut accepted = self.configured.clone();
        accepted.extend(
            stored
                .into_iter()
                .filter(|token| token.revoked_at.is_none())
                .map(|token| AcceptedToken {
                    name: token.name,
                    roles: token.roles,
                    digest: token.digest,
                }),
        );
        *self
            .accepted
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(accepted);
        Ok(())
    }

    /// Refreshes every `TOKEN_REFRESH` until `stop`; a store that does not answer keeps the
    /// last tokens read.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        store: Arc<dyn Store>,
        stop: CancellationToken,
    ) {
        if !self.settings.required {
            return;
        }
        let _ = self.store.set(store.clone());
        let access = self.clone();
        tracker.spawn(async move {
            let mut ticks = tokio::time::interval(TOKEN_REFRESH);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => {
                        if let Err(error) = access.refresh(store.as_ref()).await {
                            tracing::warn!(%error, "cannot read the API tokens; keeping the last ones read");
                        }
                    }
                }
            }
        });
    }

    /// Reads the store's tokens again after a token was not found, unless that was done a
    /// moment ago; true when the tokens were read.
    pub async fn refresh_after_miss(&self) -> bool {
        let Some(store) = self.store.get() else {
            return false;
        };
        {
            let mut last = self
                .last_miss
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = std::time::Instant::now();
            if last.is_some_and(|at| now.duration_since(at) < MISS_REFRESH) {
                return false;
            }
            *last = Some(now);
        }
        match self.refresh(store.as_ref()).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "cannot read the API tokens; keeping the last ones read");
                false
            }
        }
    }

    /// Who is calling, from the `authorization` header's value (if any) and the name in the
    /// verified client certificate (if any). A verified certificate holds the `worker` role;
    /// a token adds its own.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        certificate: Option<String>,
    ) -> Result<Caller, CoordinatorError> {
        if !self.settings.required {
            return Ok(Caller::anonymous(certificate));
        }
        let certificate_roles: Roles = certificate.iter().map(|_| Role::Worker).collect::<Roles>();
        let Some(authorization) = authorization else {
            if certificate.is_some() {
                return Ok(Caller {
                    token: None,
                    certificate,
                    roles: certificate_roles,
                });
            }
            return Err(CoordinatorError::Unauthenticated(
                "this coordinator needs a token: send the header `authorization: Bearer <token>` \
                 (celeritas --token, or CELERITAS_TOKEN)"
                    .to_owned(),
            ));
        };
        let secret = bearer_token(authorization)?;
        let accepted = self
            .accepted
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let Some(token) = find_token(&accepted, &secret) else {
            return Err(CoordinatorError::Unauthenticated(
                "authorization: this coordinator does not accept the token (unknown or revoked)"
                    .to_owned(),
            ));
        };
        Ok(Caller {
            token: Some(token.name.clone()),
            certificate,
            roles: token.roles.iter().chain(certificate_roles.iter()).collect(),
        })
    }

    /// Whether `caller`'s token is still accepted (false once it is revoked, or gone from the
    /// configuration); a caller without a token stays what its certificate made it.
    pub fn still_accepts(&self, caller: &Caller) -> bool {
        let Some(name) = &caller.token else {
            return true;
        };
        !self.settings.required
            || self
                .accepted
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .iter()
                .any(|token| &token.name == name)
    }

    /// The queues `caller` may consume as a worker; `None` for any.
    pub fn worker_queues(&self, caller: &Caller) -> Option<Vec<QueueName>> {
        self.settings.queues_of(caller.identity()).map(|queues| {
            queues
                .iter()
                .filter_map(|queue| QueueName::parse("queue", queue).ok())
                .collect()
        })
    }
}

/// Refuses `caller` unless it holds one of `roles`, naming what `call` needs.
pub fn require(caller: &Caller, roles: &[Role], call: &str) -> Result<(), CoordinatorError> {
    if caller.roles.has_any(roles) {
        return Ok(());
    }
    let needed = roles
        .iter()
        .map(|role| role.as_str())
        .collect::<Vec<_>>()
        .join(" or ");
    let holder = match &caller.token {
        Some(token) => format!(
            "the token {:?} has {}",
            token.as_str(),
            describe(caller.roles)
        ),
        None => format!("this caller has {}", describe(caller.roles)),
    };
    Err(CoordinatorError::PermissionDenied(format!(
        "{call} needs the {needed} role; {holder}"
    )))
}

fn describe(roles: Roles) -> String {
    match roles.names() {
        names if names.is_empty() => "no role".to_owned(),
        names => format!("the roles {names}"),
    }
}

/// The token in an `authorization` header's value: `Bearer <token>`.
fn bearer_token(value: &[u8]) -> Result<TokenSecret, CoordinatorError> {
    let malformed = || {
        CoordinatorError::Unauthenticated(
            "authorization: the header must be `Bearer <token>`".to_owned(),
        )
    };
    let text = std::str::from_utf8(value).map_err(|_| malformed())?;
    let (scheme, token) = text.trim().split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed());
    }
    TokenSecret::parse("authorization", token.trim())
        .map_err(|error| CoordinatorError::Unauthenticated(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfiguredToken;

    fn access_with(token: &TokenSecret, roles: &[&str]) -> Access {
        let mut settings = AuthSettings {
            required: true,
            ..AuthSettings::default()
        };
        settings.tokens.insert(
            "django".to_owned(),
            ConfiguredToken {
                roles: roles.iter().map(ToString::to_string).collect(),
                sha256: token.digest().to_hex(),
            },
        );
        Access::new(&settings).unwrap()
    }

    #[test]
    fn a_configured_token_authenticates_with_its_roles() {
        let token = TokenSecret::generate();
        let access = access_with(&token, &["submit"]);
        let header = format!("Bearer {}", token.expose());
        let caller = access.authenticate(Some(header.as_bytes()), None).unwrap();
        assert_eq!(caller.token.as_ref().unwrap().as_str(), "django");
        assert!(require(&caller, &[Role::Submit], "SubmitTask").is_ok());
        let denied = require(&caller, &[Role::Operate], "PurgeQueue").unwrap_err();
        assert!(denied.to_string().contains("needs the operate role"));
    }

    #[test]
    fn missing_malformed_and_unknown_tokens_are_unauthenticated() {
        let access = access_with(&TokenSecret::generate(), &["admin"]);
        for header in [
            None,
            Some(b"Basic abc".as_slice()),
            Some(b"Bearer".as_slice()),
            Some(b"Bearer \xff\xfe".as_slice()),
            Some(b"Bearer celeritas_nope".as_slice()),
        ] {
            let error = access.authenticate(header, None).unwrap_err();
            assert!(
                matches!(error, CoordinatorError::Unauthenticated(_)),
                "{header:?}"
            );
        }
    }

    #[test]
    fn a_certificate_alone_is_a_worker_and_identities_limit_queues() {
        let mut settings = AuthSettings {
            required: true,
            ..AuthSettings::default()
        };
        settings
            .worker_queues
            .insert("import-worker".to_owned(), vec!["import".to_owned()]);
        let access = Access::new(&settings).unwrap();
        let caller = access
            .authenticate(None, Some("import-worker".to_owned()))
            .unwrap();
        assert!(caller.roles.has(Role::Worker));
        assert!(!caller.roles.has(Role::Read));
        let queues = access.worker_queues(&caller).unwrap();
        assert_eq!(queues, vec![QueueName::parse("q", "import").unwrap()]);
        let stranger = access.authenticate(None, Some("other".to_owned())).unwrap();
        assert_eq!(access.worker_queues(&stranger), Some(Vec::new()));

        // `"*"` in a list is every queue; as a key it is every unlisted identity.
        settings
            .worker_queues
            .insert("admin-worker".to_owned(), vec!["*".to_owned()]);
        settings
            .worker_queues
            .insert("*".to_owned(), vec!["default".to_owned()]);
        settings.validate().unwrap();
        let access = Access::new(&settings).unwrap();
        let admin = access
            .authenticate(None, Some("admin-worker".to_owned()))
            .unwrap();
        assert_eq!(access.worker_queues(&admin), None);
        let stranger = access.authenticate(None, Some("other".to_owned())).unwrap();
        assert_eq!(
            access.worker_queues(&stranger),
            Some(vec![QueueName::parse("q", "default").unwrap()])
        );
    }
}
