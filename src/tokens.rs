//! Who a request is: the admin token (`server.auth_token`) and the named tokens of
//! `server.tokens`, each with a role, a channel-group filter, a stream limit and an expiry.
//!
//! A presented token is hashed once and compared with every known digest in constant
//! time (no early exit), so neither which token matched nor how much of it matched leaks
//! through timing. Secrets are kept only as SHA-256 digests. Each named token carries its
//! live state (open streams, HLS viewing, a revocation signal) across reloads as long as
//! its name and secret stay; a token that is removed or given a new secret is revoked, and
//! every stream it holds ends at once.

use crate::config::{Role, ServerConfig};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The admin token's name (in logs, metrics and `/api/tokens`).
pub const ADMIN: &str = "admin";

/// How long a token's HLS viewing of a channel counts after its last playlist or segment
/// request: three segments, at least 10 s (players poll every segment or so).
pub fn hls_lease(segment_secs: f64) -> Duration {
    Duration::from_secs_f64((segment_secs * 3.0).max(10.0))
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A token's running sessions.
#[derive(Debug, Default)]
struct Usage {
    /// `/stream` responses open now.
    streams: u32,
    /// HLS viewing per channel: when its playlist or a segment was last asked for.
    hls: HashMap<u32, Instant>,
}

/// What lives as long as a token keeps its name and secret.
#[derive(Debug)]
struct Live {
    usage: Mutex<Usage>,
    revoked: tokio::sync::watch::Sender<bool>,
}

impl Live {
    fn new() -> Arc<Live> {
        Arc::new(Live {
            usage: Mutex::new(Usage::default()),
            revoked: tokio::sync::watch::channel(false).0,
        })
    }
}

/// One token as a request sees it.
#[derive(Debug)]
pub struct Holder {
    pub name: Arc<str>,
    pub role: Role,
    pub max_streams: Option<u32>,
    /// Channel groups this token may see (lower-cased); empty: all.
    groups: Vec<String>,
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
    digest: [u8; 32],
    live: Arc<Live>,
    pub source: Source,
}

/// The identity of an authorised request.
pub type Identity = Arc<Holder>;

/// Why a known token is refused a stream.
#[derive(Debug, PartialEq, Eq)]
pub struct Limit {
    pub name: Arc<str>,
    pub max: u32,
    pub in_use: u32,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "token {:?} may have {} stream{} at once and has {} open; close one first",
            self.name,
            self.max,
            if self.max == 1 { "" } else { "s" },
            self.in_use
        )
    }
}

impl Holder {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether this token may see a channel of `group`.
    pub fn sees(&self, group: Option<&str>) -> bool {
        self.groups.is_empty()
            || group.is_some_and(|g| {
                let g = g.trim().to_lowercase();
                self.groups.contains(&g)
            })
    }

    pub fn expired(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }

    fn in_use(usage: &mut Usage, hls_ttl: Duration, now: Instant) -> u32 {
        usage.hls.retain(|_, t| now.duration_since(*t) < hls_ttl);
        usage.streams + usage.hls.len() as u32
    }

    /// Opens a `/stream` session, if the limit allows. The lease ends it when dropped.
    pub fn open_stream(self: &Arc<Self>, hls_ttl: Duration) -> Result<Lease, Limit> {
        let mut u = lock(&self.live.usage);
        let in_use = Self::in_use(&mut u, hls_ttl, Instant::now());
        if let Some(max) = self.max_streams.filter(|m| in_use >= *m) {
            return Err(Limit {
                name: self.name.clone(),
                max,
                in_use,
            });
        }
        u.streams += 1;
        Ok(Lease {
            holder: self.clone(),
        })
    }

    /// Counts HLS viewing of `channel` (a new channel only if the limit allows); viewing
    /// lasts `hls_ttl` after the last playlist or segment request.
    pub fn touch_hls(&self, channel: u32, hls_ttl: Duration) -> Result<(), Limit> {
        let now = Instant::now();
        let mut u = lock(&self.live.usage);
        let in_use = Self::in_use(&mut u, hls_ttl, now);
        if !u.hls.contains_key(&channel) {
            if let Some(max) = self.max_streams.filter(|m| in_use >= *m) {
                return Err(Limit {
                    name: self.name.clone(),
                    max,
                    in_use,
                });
            }
        }
        u.hls.insert(channel, now);
        Ok(())
    }

    /// Sessions open now (streams plus channels watched over HLS).
    pub fn sessions(&self, hls_ttl: Duration) -> u32 {
        Self::in_use(&mut lock(&self.live.usage), hls_ttl, Instant::now())
    }

    /// Resolves once the token is revoked or expires (for ending its streams).
    pub fn ended(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.live.revoked.subscribe();
        let expires = self.expires;
        async move {
            let revoked = async move {
                // An error means the sender is gone: the token set was dropped.
                let _ = rx.wait_for(|r| *r).await;
            };
            let expiry = async move {
                match expires {
                    Some(e) => {
                        let left = (e - chrono::Utc::now()).to_std().unwrap_or_default();
                        tokio::time::sleep(left).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = revoked => {}
                _ = expiry => {}
            }
        }
    }

    pub fn revoked(&self) -> bool {
        *self.live.revoked.borrow()
    }
}

/// An open `/stream` session of a token.
#[derive(Debug)]
pub struct Lease {
    holder: Identity,
}

impl Lease {
    pub fn holder(&self) -> &Identity {
        &self.holder
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut u = lock(&self.holder.live.usage);
        u.streams = u.streams.saturating_sub(1);
    }
}

/// A token created through `POST /api/tokens`, as the state file keeps it: the secret's
/// SHA-256 digest only (the secret itself was shown once, to the one who created it).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    pub name: String,
    #[serde(default)]
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
    /// Hex SHA-256 of the secret.
    pub sha256: String,
}

impl ApiToken {
    /// A new API token and its secret (48 hex digits from the kernel's random source).
    pub fn generate(
        name: String,
        role: Role,
        max_streams: Option<u32>,
        groups: Vec<String>,
        expires: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Option<(ApiToken, String)> {
        let secret = crate::auth::random_hex(24)?;
        let sha256 = digest(&secret).iter().map(|b| format!("{b:02x}")).collect();
        Some((
            ApiToken {
                name,
                role,
                max_streams,
                groups,
                expires,
                sha256,
            },
            secret,
        ))
    }

    fn digest(&self) -> Option<[u8; 32]> {
        let h = self.sha256.as_bytes();
        if h.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(std::str::from_utf8(&h[2 * i..2 * i + 2]).ok()?, 16).ok()?;
        }
        Some(out)
    }
}

/// Where a token is defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `server.auth_token` or `server.tokens`.
    Config,
    /// `POST /api/tokens` (kept in the state file).
    Api,
}

/// The result of looking a presented token up.
#[derive(Debug)]
pub enum Found {
    Valid(Identity),
    /// A known token past its `expires`.
    Expired(Arc<str>),
    None,
}

/// Every token in force. Replaced as a whole on reload.
#[derive(Debug)]
pub struct Tokens {
    set: RwLock<Arc<Vec<Identity>>>,
    /// The configuration's tokens (admin and named), as last applied.
    config: RwLock<ServerConfig>,
    /// Tokens created through the API.
    api: RwLock<Vec<ApiToken>>,
    /// No `auth_token`: every request is admitted as admin (loopback-only servers).
    open: RwLock<Option<Identity>>,
}

/// The `/api/tokens` view of a token (never the secret).
#[derive(Debug, serde::Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
    pub expired: bool,
    /// `/stream` and HLS sessions open now.
    pub sessions: u32,
    pub source: Source,
}

/// What a token is, before it gets its live state.
struct Spec<'a> {
    name: &'a str,
    role: Role,
    max_streams: Option<u32>,
    groups: &'a [String],
    expires: Option<chrono::DateTime<chrono::Utc>>,
    digest: [u8; 32],
    source: Source,
}

fn holder(spec: Spec, live: Arc<Live>) -> Identity {
    Arc::new(Holder {
        name: spec.name.into(),
        role: spec.role,
        max_streams: spec.max_streams,
        groups: spec
            .groups
            .iter()
            .map(|g| g.trim().to_lowercase())
            .collect(),
        expires: spec.expires,
        digest: spec.digest,
        live,
        source: spec.source,
    })
}

fn admin_spec(secret: &str) -> Spec<'static> {
    Spec {
        name: ADMIN,
        role: Role::Admin,
        max_streams: None,
        groups: &[],
        expires: None,
        digest: digest(secret),
        source: Source::Config,
    }
}

impl Tokens {
    /// A server started without `auth_token` stays open (it serves loopback only); one
    /// started with it never opens up: a reload that drops the token locks everyone out
    /// rather than letting everyone in.
    pub fn new(server: &ServerConfig) -> Tokens {
        let open = server
            .auth_token
            .is_none()
            .then(|| holder(admin_spec(""), Live::new()));
        let t = Tokens {
            set: RwLock::new(Arc::new(Vec::new())),
            config: RwLock::new(server.clone()),
            api: RwLock::new(Vec::new()),
            open: RwLock::new(open),
        };
        t.apply(server);
        t
    }

    fn current(&self) -> Arc<Vec<Identity>> {
        self.set.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `server`'s tokens in force. A token whose name and secret stay keeps its
    /// sessions; one removed or given a new secret is revoked (its streams end).
    pub fn apply(&self, server: &ServerConfig) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = server.clone();
        self.rebuild();
    }

    /// Replaces the API-created tokens (at start, from the state file).
    pub fn set_api(&self, api: Vec<ApiToken>) {
        *self.api.write().unwrap_or_else(|p| p.into_inner()) = api;
        self.rebuild();
    }

    /// The API-created tokens, as the state file keeps them.
    pub fn api_tokens(&self) -> Vec<ApiToken> {
        self.api.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adds an API token; Err names why not (its name is taken).
    pub fn add_api(&self, t: ApiToken) -> Result<(), String> {
        if t.name == ADMIN || self.current().iter().any(|h| *h.name == *t.name) {
            return Err(format!("a token named {:?} exists already", t.name));
        }
        self.api.write().unwrap_or_else(|p| p.into_inner()).push(t);
        self.rebuild();
        Ok(())
    }

    /// Removes (and so revokes) an API token. Ok(false): no API token of that name.
    pub fn remove_api(&self, name: &str) -> bool {
        let mut api = self.api.write().unwrap_or_else(|p| p.into_inner());
        let before = api.len();
        api.retain(|t| t.name != name);
        let removed = api.len() != before;
        drop(api);
        if removed {
            self.rebuild();
        }
        removed
    }

    fn rebuild(&self) {
        let server = self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let api = self.api_tokens();
        let old = self.current();
        let keep = |name: &str, d: &[u8; 32]| {
            old.iter()
                .find(|h| &*h.name == name && bool::from(h.digest.ct_eq(d)))
                .map(|h| h.live.clone())
                .unwrap_or_else(Live::new)
        };
        let mut specs = Vec::new();
        if let Some(admin) = &server.auth_token {
            specs.push(admin_spec(admin));
        }
        for t in &server.tokens {
            let Some(secret) = &t.secret else { continue };
            specs.push(Spec {
                name: &t.name,
                role: t.role,
                max_streams: t.max_streams,
                groups: &t.groups,
                expires: t.expires,
                digest: digest(secret),
                source: Source::Config,
            });
        }
        for t in &api {
            // A name the config has taken since wins; a bad digest never matches.
            let (Some(d), false) = (t.digest(), specs.iter().any(|s| s.name == t.name)) else {
                continue;
            };
            specs.push(Spec {
                name: &t.name,
                role: t.role,
                max_streams: t.max_streams,
                groups: &t.groups,
                expires: t.expires,
                digest: d,
                source: Source::Api,
            });
        }
        let set: Vec<Identity> = specs
            .into_iter()
            .map(|s| {
                let live = keep(s.name, &s.digest);
                holder(s, live)
            })
            .collect();
        let set = Arc::new(set);
        // The new set is in force before any stream is told to end, so a client that
        // sees its stream end and asks again is refused (not let in by the old set).
        *self.set.write().unwrap_or_else(|p| p.into_inner()) = set.clone();
        for h in old.iter() {
            if !set.iter().any(|n| Arc::ptr_eq(&n.live, &h.live)) {
                tracing::info!(token = %h.name, "token removed or changed; ending its streams");
                h.live.revoked.send_replace(true);
            }
        }
    }

    /// Whether any token is required.
    pub fn required(&self) -> bool {
        self.open
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// The identity of a server without tokens (None when tokens are required).
    pub fn open_identity(&self) -> Option<Identity> {
        self.open.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Looks `presented` up among every token, in constant time over the set.
    pub fn find(&self, presented: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> Found {
        if let Some(open) = self.open_identity() {
            return Found::Valid(open);
        }
        let Some(p) = presented else {
            return Found::None;
        };
        let d = digest(p);
        let set = self.current();
        let mut hit: Option<&Identity> = None;
        for h in set.iter() {
            let eq: bool = h.digest.ct_eq(&d).into();
            hit = if eq { Some(h) } else { hit };
        }
        match hit {
            Some(h) if h.expired(now) => Found::Expired(h.name.clone()),
            Some(h) => Found::Valid(h.clone()),
            None => Found::None,
        }
    }

    /// What a dashboard session remembers of its token: the name and a digest of the
    /// secret, so a token given a new secret does not keep the old one's sessions.
    pub fn session_key(who: &Identity) -> String {
        let d = Sha256::digest(who.digest);
        let tag: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}#{tag}", who.name)
    }

    /// The token a dashboard session belongs to, if it is still in force.
    pub fn by_session_key(&self, key: &str) -> Option<Identity> {
        if let Some(open) = self.open_identity() {
            return Some(open);
        }
        self.current()
            .iter()
            .find(|h| Self::session_key(h) == key)
            .cloned()
    }

    /// Every token, for `/api/tokens` and metrics.
    pub fn list(&self, hls_ttl: Duration, now: chrono::DateTime<chrono::Utc>) -> Vec<TokenInfo> {
        self.current()
            .iter()
            .map(|h| TokenInfo {
                name: h.name.to_string(),
                role: h.role,
                max_streams: h.max_streams,
                groups: h.groups.clone(),
                expires: h.expires,
                expired: h.expired(now),
                sessions: h.sessions(hls_ttl),
                source: h.source,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NamedToken;

    fn named(name: &str, secret: &str, role: Role) -> NamedToken {
        NamedToken {
            name: name.into(),
            token: None,
            token_file: None,
            token_env: None,
            role,
            max_streams: None,
            groups: Vec::new(),
            expires: None,
            secret: Some(secret.into()),
        }
    }

    fn server(tokens: Vec<NamedToken>) -> ServerConfig {
        ServerConfig {
            auth_token: Some("admin-secret-0123456789".into()),
            tokens,
            ..Default::default()
        }
    }

    fn valid(t: &Tokens, p: &str) -> Option<Identity> {
        match t.find(Some(p), chrono::Utc::now()) {
            Found::Valid(i) => Some(i),
            _ => None,
        }
    }

    #[test]
    fn each_token_finds_its_own_identity() {
        let t = Tokens::new(&server(vec![
            named("tv", "tv-secret-0123456789", Role::Viewer),
            named("ops", "ops-secret-0123456789", Role::Admin),
        ]));
        assert!(t.required());
        assert_eq!(&*valid(&t, "admin-secret-0123456789").unwrap().name, ADMIN);
        let tv = valid(&t, "tv-secret-0123456789").unwrap();
        assert_eq!((&*tv.name, tv.role), ("tv", Role::Viewer));
        assert!(valid(&t, "ops-secret-0123456789").unwrap().is_admin());
        assert!(valid(&t, "tv-secret-012345678").is_none());
        assert!(matches!(t.find(None, chrono::Utc::now()), Found::None));
        let open = Tokens::new(&ServerConfig::default());
        assert!(!open.required());
        assert!(valid(&open, "anything").unwrap().is_admin());
    }

    #[test]
    fn expiry_groups_and_limits() {
        let mut tv = named("tv", "tv-secret-0123456789", Role::Viewer);
        tv.groups = vec!["News".into(), " kids ".into()];
        tv.max_streams = Some(2);
        let mut old = named("old", "old-secret-0123456789", Role::Viewer);
        old.expires = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
        let t = Tokens::new(&server(vec![tv, old]));
        assert!(matches!(
            t.find(Some("old-secret-0123456789"), chrono::Utc::now()),
            Found::Expired(n) if &*n == "old"
        ));
        let tv = valid(&t, "tv-secret-0123456789").unwrap();
        assert!(tv.sees(Some("news")) && tv.sees(Some("Kids")));
        assert!(!tv.sees(Some("Sports")) && !tv.sees(None));
        let ttl = Duration::from_secs(10);
        let a = tv.open_stream(ttl).unwrap();
        tv.touch_hls(7, ttl).unwrap();
        tv.touch_hls(7, ttl).unwrap();
        assert_eq!(tv.sessions(ttl), 2);
        let err = tv.open_stream(ttl).unwrap_err();
        assert_eq!((err.max, err.in_use), (2, 2));
        assert!(err.to_string().contains("\"tv\" may have 2 streams"));
        assert!(tv.touch_hls(8, ttl).is_err(), "a new HLS channel counts");
        drop(a);
        let _b = tv.open_stream(ttl).unwrap();
        // HLS viewing ends when it is no longer asked for.
        assert_eq!(tv.sessions(Duration::ZERO), 1);
        let admin = valid(&t, "admin-secret-0123456789").unwrap();
        assert!(admin.sees(Some("Sports")) && admin.sees(None));
    }

    #[tokio::test]
    async fn removing_or_changing_a_token_revokes_it_and_keeps_the_others() {
        let cfg = server(vec![
            named("tv", "tv-secret-0123456789", Role::Viewer),
            named("phone", "phone-secret-0123456789", Role::Viewer),
        ]);
        let t = Tokens::new(&cfg);
        let tv = valid(&t, "tv-secret-0123456789").unwrap();
        let phone = valid(&t, "phone-secret-0123456789").unwrap();
        let lease = phone.open_stream(Duration::from_secs(1)).unwrap();
        let ended = tv.ended();
        // The phone keeps its secret (and its open stream); the tv's entry goes.
        t.apply(&server(vec![named(
            "phone",
            "phone-secret-0123456789",
            Role::Viewer,
        )]));
        tokio::time::timeout(Duration::from_secs(1), ended)
            .await
            .expect("the removed token's streams are told to end");
        assert!(tv.revoked() && !phone.revoked());
        assert!(valid(&t, "tv-secret-0123456789").is_none());
        let phone2 = valid(&t, "phone-secret-0123456789").unwrap();
        assert_eq!(
            phone2.sessions(Duration::from_secs(1)),
            1,
            "sessions carried"
        );
        drop(lease);
        // A new secret under the same name is a new token: the old one is revoked.
        t.apply(&server(vec![named(
            "phone",
            "phone-secret-9876543210",
            Role::Viewer,
        )]));
        assert!(phone2.revoked());
        assert!(valid(&t, "phone-secret-0123456789").is_none());
        assert!(valid(&t, "phone-secret-9876543210").is_some());
    }

    #[tokio::test]
    async fn api_tokens_keep_only_a_digest_and_can_be_removed() {
        let t = Tokens::new(&server(vec![named(
            "tv",
            "tv-secret-0123456789",
            Role::Viewer,
        )]));
        let (api, secret) =
            ApiToken::generate("phone".into(), Role::Viewer, Some(1), vec![], None).unwrap();
        assert_eq!(secret.len(), 48);
        assert!(!serde_json::to_string(&api).unwrap().contains(&secret));
        t.add_api(api.clone()).unwrap();
        let phone = valid(&t, &secret).unwrap();
        assert_eq!(phone.source, Source::Api);
        assert!(t.add_api(api.clone()).is_err(), "names are unique");
        let (dup, _) = ApiToken::generate("tv".into(), Role::Admin, None, vec![], None).unwrap();
        assert!(t.add_api(dup).is_err(), "config names are taken");
        // A reload of the config keeps API tokens.
        t.apply(&server(vec![]));
        assert!(valid(&t, &secret).is_some() && !phone.revoked());
        let ended = phone.ended();
        assert!(t.remove_api("phone"));
        tokio::time::timeout(Duration::from_secs(1), ended)
            .await
            .unwrap();
        assert!(valid(&t, &secret).is_none());
        assert!(!t.remove_api("phone"));
        // Restored from the state file.
        t.set_api(vec![api]);
        assert!(valid(&t, &secret).is_some());
    }

    #[tokio::test]
    async fn an_expiring_token_ends_its_streams() {
        let mut tv = named("tv", "tv-secret-0123456789", Role::Viewer);
        tv.expires = Some(chrono::Utc::now() + chrono::Duration::milliseconds(200));
        let t = Tokens::new(&server(vec![tv]));
        let tv = valid(&t, "tv-secret-0123456789").unwrap();
        tokio::time::timeout(Duration::from_secs(2), tv.ended())
            .await
            .expect("ends at expiry");
    }
}
