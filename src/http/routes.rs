//! The one route table. A request path is decoded once into a typed [`Path`]; the metric
//! label and the access-log name come from [`Path::pattern`], and [`ROUTES`] lists every
//! (method, pattern) the server answers, with an example path and whether it is public.
//! The dispatcher (`dispatch.rs`) matches on `Path` exhaustively, so a new variant cannot
//! be left without a handler, and the unit tests below check that the table and the
//! decoder agree.
//!
//! Where to add a route: a variant here (with its decoding and pattern), a row in
//! [`ROUTES`], and an arm in `dispatch::route`.

use super::hdhr::{self, Target};

/// Every path the server knows, with its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    Health,
    Login,
    Logout,
    /// `/`: the dashboard.
    Dashboard,
    /// `/watch/<id>`: a channel in the browser.
    Watch(u32),
    /// `/ui/<file>`: the dashboard's static files.
    Ui(String),
    /// `/thumb/<id>.jpg`.
    Thumb(u32),
    Playlist,
    Metrics,
    Epg,
    /// `/api/streams`.
    Streams,
    /// `/api/streams/<id>`.
    Stream(u32),
    /// `/api/streams/<id>/programs`.
    Programs(u32),
    /// `/api/streams/<id>/status`.
    Status(u32),
    Reload,
    /// `/api/tokens`: the tokens in force (admin).
    Tokens,
    /// `/api/tokens/<name>`: one API-created token.
    Token(String),
    /// `/api/schedule`.
    Schedule,
    /// `/api/schedule/<id>`.
    Scheduled(u32),
    /// `/stream/<id>`: the channel's MPEG-TS.
    Media(u32),
    /// `/hls/<id>/index.m3u8`.
    HlsPlaylist(u32),
    HlsMaster(u32),
    /// `/hls/<id>/<session>-<seq>.ts`.
    HlsSegment(u32, String),
    /// `/catchup/<id>.ts`: a window of the channel's archive as MPEG-TS.
    Catchup(u32),
    /// `/catchup/<id>/index.m3u8`: the same window as HLS.
    CatchupPlaylist(u32),
    /// `/catchup/<id>/<start ms>.ts`: one archive segment.
    CatchupSegment(u32, String),
    /// `/api/recordings`.
    Recordings,
    /// `/api/recordings/<id>`.
    Recording(u32),
    /// `/recordings/<id>.ts`: a recording's file.
    RecordingFile(String),
    /// `/recordings.m3u`: the recordings as a playlist.
    RecordingsPlaylist,
    /// `/api/playlists`: the provider playlists (admin).
    Playlists,
    /// `/api/playlists/<name>`.
    PlaylistSource(String),
    /// `/api/playlists/<name>/refresh`.
    PlaylistRefresh(String),
    /// `/api/playlists/<name>/channels`: every channel it imports, hidden ones too.
    PlaylistChannels(String),
    /// `/api/playlists/<name>/channels/<id>`: the owner's override of one.
    PlaylistChannel(String, u32),
    /// `/api/guides`: the guide sources.
    Guides,
    /// `/api/guides/refresh`.
    GuidesRefresh,
    /// `/playlists`: the dashboard's page of provider playlists.
    PlaylistsPage,
    /// `/playlists/<name>/refresh`: the page's refresh button.
    PageRefresh(String),
    /// `/playlists/<name>/channels/<id>`: the page's form of one channel.
    PageChannel(String, u32),
    /// `/hdhr/[<token>/]...`: the tuner emulation.
    Tuner(Target),
    NotFound,
}

/// A decimal channel id (digits only, fits `u32`).
fn id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Path {
    /// Decodes a request path (without the query).
    pub fn decode(path: &str) -> Path {
        use Path::*;
        let Some(rest) = path.strip_prefix('/') else {
            return NotFound;
        };
        if let Some(tail) = rest.strip_prefix("hdhr/") {
            return hdhr::split(tail).map_or(NotFound, |(_, t)| Tuner(t));
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let with = |s: &str, f: fn(u32) -> Path| id(s).map_or(NotFound, f);
        match segs.as_slice() {
            [""] => Dashboard,
            ["health"] => Health,
            ["login"] => Login,
            ["logout"] => Logout,
            ["watch", n] => with(n, Watch),
            ["ui", f] if !f.is_empty() => Ui((*f).to_owned()),
            ["thumb", f] => f.strip_suffix(".jpg").and_then(id).map_or(NotFound, Thumb),
            ["playlist.m3u"] => Playlist,
            ["metrics"] => Metrics,
            ["epg.xml"] => Epg,
            ["api", "streams"] => Streams,
            ["api", "streams", n] => with(n, Stream),
            ["api", "streams", n, "programs"] => with(n, Programs),
            ["api", "streams", n, "status"] => with(n, Status),
            ["api", "reload"] => Reload,
            ["api", "tokens"] => Tokens,
            ["api", "tokens", name] if crate::config::validate::token_name_ok(name) => {
                Token((*name).to_owned())
            }
            ["api", "playlists"] => Playlists,
            ["api", "playlists", name, rest @ ..]
                if crate::config::validate::token_name_ok(name) =>
            {
                let name = (*name).to_owned();
                match rest {
                    [] => PlaylistSource(name),
                    ["refresh"] => PlaylistRefresh(name),
                    ["channels"] => PlaylistChannels(name),
                    ["channels", n] => id(n).map_or(NotFound, |n| PlaylistChannel(name, n)),
                    _ => NotFound,
                }
            }
            ["playlists"] => PlaylistsPage,
            ["playlists", name, "refresh"] if crate::config::validate::token_name_ok(name) => {
                PageRefresh((*name).to_owned())
            }
            ["playlists", name, "channels", n] if crate::config::validate::token_name_ok(name) => {
                id(n).map_or(NotFound, |n| PageChannel((*name).to_owned(), n))
            }
            ["api", "guides"] => Guides,
            ["api", "guides", "refresh"] => GuidesRefresh,
            ["api", "schedule"] => Schedule,
            ["api", "schedule", n] => with(n, Scheduled),
            ["stream", n] => with(n, Media),
            ["hls", n, "index.m3u8"] => with(n, HlsPlaylist),
            ["hls", n, "master.m3u8"] => with(n, HlsMaster),
            ["hls", n, f] if f.ends_with(".ts") => {
                id(n).map_or(NotFound, |n| HlsSegment(n, (*f).to_owned()))
            }
            ["api", "recordings"] => Recordings,
            ["api", "recordings", n] => with(n, Recording),
            ["recordings.m3u"] => RecordingsPlaylist,
            ["recordings", f] if f.ends_with(".ts") => RecordingFile((*f).to_owned()),
            ["catchup", f] => f.strip_suffix(".ts").and_then(id).map_or(NotFound, Catchup),
            ["catchup", n, "index.m3u8"] => with(n, CatchupPlaylist),
            ["catchup", n, f] if f.ends_with(".ts") => {
                id(n).map_or(NotFound, |n| CatchupSegment(n, (*f).to_owned()))
            }
            _ => NotFound,
        }
    }

    /// The route pattern: a bounded metric label and the access log's route name.
    pub fn pattern(&self) -> &'static str {
        use Path::*;
        match self {
            Health => "/health",
            Login => "/login",
            Logout => "/logout",
            Dashboard => "/",
            Watch(_) => "/watch/{id}",
            Ui(_) => "/ui/{file}",
            Thumb(_) => "/thumb/{id}.jpg",
            Playlist => "/playlist.m3u",
            Metrics => "/metrics",
            Epg => "/epg.xml",
            Streams => "/api/streams",
            Stream(_) => "/api/streams/{id}",
            Programs(_) => "/api/streams/{id}/programs",
            Status(_) => "/api/streams/{id}/status",
            Reload => "/api/reload",
            Tokens => "/api/tokens",
            Token(_) => "/api/tokens/{name}",
            Schedule => "/api/schedule",
            Scheduled(_) => "/api/schedule/{id}",
            Media(_) => "/stream/{id}",
            HlsPlaylist(_) => "/hls/{id}/index.m3u8",
            HlsMaster(_) => "/hls/{id}/master.m3u8",
            HlsSegment(..) => "/hls/{id}/{segment}",
            Recordings => "/api/recordings",
            Recording(_) => "/api/recordings/{id}",
            RecordingFile(_) => "/recordings/{id}.ts",
            RecordingsPlaylist => "/recordings.m3u",
            Catchup(_) => "/catchup/{id}.ts",
            CatchupPlaylist(_) => "/catchup/{id}/index.m3u8",
            CatchupSegment(..) => "/catchup/{id}/{segment}",
            Playlists => "/api/playlists",
            PlaylistSource(_) => "/api/playlists/{name}",
            PlaylistRefresh(_) => "/api/playlists/{name}/refresh",
            PlaylistChannels(_) => "/api/playlists/{name}/channels",
            PlaylistChannel(..) => "/api/playlists/{name}/channels/{id}",
            Guides => "/api/guides",
            GuidesRefresh => "/api/guides/refresh",
            PlaylistsPage => "/playlists",
            PageRefresh(_) => "/playlists/{name}/refresh",
            PageChannel(..) => "/playlists/{name}/channels/{id}",
            Tuner(t) => match t {
                Target::Discover => "/hdhr/{token}/discover.json",
                Target::Lineup => "/hdhr/{token}/lineup.json",
                Target::LineupStatus => "/hdhr/{token}/lineup_status.json",
                Target::LineupPost => "/hdhr/{token}/lineup.post",
                Target::DeviceXml => "/hdhr/{token}/device.xml",
                Target::Channel(_) => "/hdhr/{token}/auto/v{n}",
            },
            NotFound => "other",
        }
    }

    /// The channel a path is about, if any (a token sees only its groups' channels).
    pub fn channel(&self) -> Option<u32> {
        use Path::*;
        match self {
            Watch(id)
            | Thumb(id)
            | Stream(id)
            | Programs(id)
            | Status(id)
            | Media(id)
            | HlsPlaylist(id)
            | HlsMaster(id)
            | HlsSegment(id, _)
            | Catchup(id)
            | CatchupPlaylist(id)
            | CatchupSegment(id, _) => Some(*id),
            _ => None,
        }
    }

    /// Pages: a browser without a session gets the login form there.
    pub fn is_page(&self) -> bool {
        matches!(self, Path::Dashboard | Path::Watch(_) | Path::PlaylistsPage)
    }

    /// Who may use `method` on this path. A (path, method) the table does not list is
    /// answered 404 or 405 to any valid token, so it needs only a viewer's.
    pub fn access(&self, method: &str) -> Access {
        let pattern = self.pattern();
        ROUTES
            .iter()
            .find(|r| r.method == method && r.pattern == pattern)
            .map_or(Access::Viewer, |r| r.access)
    }

    /// Whether `method` on this path is answered without the token.
    pub fn is_public(&self, method: &str) -> bool {
        self.access(method) == Access::Public
    }
}

/// Who may use a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// No token needed.
    Public,
    /// Any valid token (viewer or admin); lists are filtered to the token's channels.
    Viewer,
    /// An admin token (`server.auth_token`, or a named token with `role: admin`).
    Admin,
}

/// One route: method, pattern (as used in metrics labels), an example path for tests,
/// and who may use it.
#[derive(Clone, Copy, Debug)]
pub struct RouteSpec {
    pub method: &'static str,
    pub pattern: &'static str,
    pub example: &'static str,
    pub access: Access,
}

impl RouteSpec {
    pub fn public(&self) -> bool {
        self.access == Access::Public
    }
}

/// A route any valid token may use.
const fn viewer(method: &'static str, pattern: &'static str, example: &'static str) -> RouteSpec {
    RouteSpec {
        method,
        pattern,
        example,
        access: Access::Viewer,
    }
}

/// A route only admin tokens may use.
const fn admin(method: &'static str, pattern: &'static str, example: &'static str) -> RouteSpec {
    RouteSpec {
        method,
        pattern,
        example,
        access: Access::Admin,
    }
}

/// A route answered without the token (its example is its pattern).
const fn public(method: &'static str, pattern: &'static str) -> RouteSpec {
    RouteSpec {
        method,
        pattern,
        example: pattern,
        access: Access::Public,
    }
}

/// Every (method, route) the server answers.
pub const ROUTES: &[RouteSpec] = &[
    public("GET", "/health"),
    public("GET", "/login"),
    public("POST", "/login"),
    public("POST", "/logout"),
    viewer("GET", "/", "/"),
    viewer("GET", "/watch/{id}", "/watch/1"),
    viewer("GET", "/ui/{file}", "/ui/style.css"),
    viewer("GET", "/thumb/{id}.jpg", "/thumb/1.jpg"),
    viewer("GET", "/playlist.m3u", "/playlist.m3u"),
    admin("GET", "/metrics", "/metrics"),
    viewer("GET", "/api/streams", "/api/streams"),
    admin("POST", "/api/streams", "/api/streams"),
    viewer("GET", "/api/streams/{id}", "/api/streams/1"),
    admin("PUT", "/api/streams/{id}", "/api/streams/1"),
    admin("PATCH", "/api/streams/{id}", "/api/streams/1"),
    admin("DELETE", "/api/streams/{id}", "/api/streams/1"),
    viewer(
        "GET",
        "/api/streams/{id}/programs",
        "/api/streams/1/programs",
    ),
    admin(
        "PUT",
        "/api/streams/{id}/programs",
        "/api/streams/1/programs",
    ),
    admin("GET", "/api/streams/{id}/status", "/api/streams/1/status"),
    admin("POST", "/api/reload", "/api/reload"),
    admin("GET", "/api/tokens", "/api/tokens"),
    admin("POST", "/api/tokens", "/api/tokens"),
    admin("DELETE", "/api/tokens/{name}", "/api/tokens/phone"),
    viewer("GET", "/stream/{id}", "/stream/1"),
    viewer("HEAD", "/stream/{id}", "/stream/1"),
    viewer("GET", "/hls/{id}/index.m3u8", "/hls/1/index.m3u8"),
    viewer("GET", "/hls/{id}/{segment}", "/hls/1/0-0.ts"),
    viewer("GET", "/api/recordings", "/api/recordings"),
    admin("POST", "/api/recordings", "/api/recordings"),
    viewer("GET", "/api/recordings/{id}", "/api/recordings/1"),
    admin("DELETE", "/api/recordings/{id}", "/api/recordings/1"),
    viewer("GET", "/recordings/{id}.ts", "/recordings/1.ts"),
    viewer("HEAD", "/recordings/{id}.ts", "/recordings/1.ts"),
    viewer("GET", "/recordings.m3u", "/recordings.m3u"),
    viewer("GET", "/catchup/{id}.ts", "/catchup/1.ts"),
    viewer("HEAD", "/catchup/{id}.ts", "/catchup/1.ts"),
    viewer("GET", "/catchup/{id}/index.m3u8", "/catchup/1/index.m3u8"),
    viewer("GET", "/catchup/{id}/{segment}", "/catchup/1/0.ts"),
    viewer("GET", "/epg.xml", "/epg.xml"),
    admin("GET", "/api/playlists", "/api/playlists"),
    admin("POST", "/api/playlists", "/api/playlists"),
    admin("GET", "/api/playlists/{name}", "/api/playlists/p"),
    admin("PUT", "/api/playlists/{name}", "/api/playlists/p"),
    admin("DELETE", "/api/playlists/{name}", "/api/playlists/q"),
    admin(
        "POST",
        "/api/playlists/{name}/refresh",
        "/api/playlists/p/refresh",
    ),
    admin(
        "GET",
        "/api/playlists/{name}/channels",
        "/api/playlists/p/channels",
    ),
    admin(
        "PUT",
        "/api/playlists/{name}/channels/{id}",
        "/api/playlists/p/channels/2000000001",
    ),
    admin("GET", "/playlists", "/playlists"),
    admin("POST", "/playlists/{name}/refresh", "/playlists/p/refresh"),
    admin(
        "POST",
        "/playlists/{name}/channels/{id}",
        "/playlists/p/channels/2000000001",
    ),
    admin("GET", "/api/guides", "/api/guides"),
    admin("POST", "/api/guides/refresh", "/api/guides/refresh"),
    viewer("GET", "/api/schedule", "/api/schedule"),
    admin("POST", "/api/schedule", "/api/schedule"),
    viewer("GET", "/api/schedule/{id}", "/api/schedule/900"),
    admin("PUT", "/api/schedule/{id}", "/api/schedule/900"),
    admin("DELETE", "/api/schedule/{id}", "/api/schedule/900"),
    viewer(
        "GET",
        "/hdhr/{token}/discover.json",
        "/hdhr/x/discover.json",
    ),
    viewer("GET", "/hdhr/{token}/lineup.json", "/hdhr/x/lineup.json"),
    viewer(
        "GET",
        "/hdhr/{token}/lineup_status.json",
        "/hdhr/x/lineup_status.json",
    ),
    viewer("POST", "/hdhr/{token}/lineup.post", "/hdhr/x/lineup.post"),
    viewer("GET", "/hdhr/{token}/device.xml", "/hdhr/x/device.xml"),
    viewer("GET", "/hdhr/{token}/auto/v{n}", "/hdhr/x/auto/v2"),
    viewer("HEAD", "/hdhr/{token}/auto/v{n}", "/hdhr/x/auto/v2"),
];

/// The route pattern a request belongs to, for bounded metric labels.
pub fn pattern_of(path: &str) -> &'static str {
    Path::decode(path).pattern()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_into_typed_routes() {
        use Path::*;
        let cases: &[(&str, Path)] = &[
            ("/", Dashboard),
            ("/health", Health),
            ("/login", Login),
            ("/logout", Logout),
            ("/watch/7", Watch(7)),
            ("/ui/style.css", Ui("style.css".into())),
            ("/thumb/12.jpg", Thumb(12)),
            ("/playlist.m3u", Playlist),
            ("/metrics", Metrics),
            ("/epg.xml", Epg),
            ("/api/streams", Streams),
            ("/api/streams/42", Stream(42)),
            ("/api/streams/42/programs", Programs(42)),
            ("/api/streams/42/status", Status(42)),
            ("/api/reload", Reload),
            ("/api/tokens", Tokens),
            ("/api/tokens/tv-1.x", Token("tv-1.x".into())),
            ("/api/tokens/a%20b", NotFound),
            ("/api/schedule", Schedule),
            ("/api/schedule/900", Scheduled(900)),
            ("/stream/1", Media(1)),
            ("/hls/3/index.m3u8", HlsPlaylist(3)),
            ("/hls/3/master.m3u8", HlsMaster(3)),
            ("/hls/3/19a4c-17.ts", HlsSegment(3, "19a4c-17.ts".into())),
            ("/catchup/4.ts", Catchup(4)),
            ("/api/recordings", Recordings),
            ("/api/recordings/3", Recording(3)),
            ("/recordings/3.ts", RecordingFile("3.ts".into())),
            ("/recordings.m3u", RecordingsPlaylist),
            ("/catchup/4/index.m3u8", CatchupPlaylist(4)),
            (
                "/catchup/4/1796186384421.ts",
                CatchupSegment(4, "1796186384421.ts".into()),
            ),
            ("/api/playlists", Playlists),
            ("/api/playlists/prov-1", PlaylistSource("prov-1".into())),
            ("/api/playlists/p/refresh", PlaylistRefresh("p".into())),
            ("/api/playlists/p/channels", PlaylistChannels("p".into())),
            (
                "/api/playlists/p/channels/2000000001",
                PlaylistChannel("p".into(), 2000000001),
            ),
            ("/api/playlists/p/channels/x", NotFound),
            ("/api/playlists/a%20b", NotFound),
            ("/api/guides", Guides),
            ("/playlists", PlaylistsPage),
            ("/playlists/p/refresh", PageRefresh("p".into())),
            ("/playlists/p/channels/7", PageChannel("p".into(), 7)),
            ("/api/guides/refresh", GuidesRefresh),
            ("/catchup/x.ts", NotFound),
            ("/catchup/4", NotFound),
            ("/catchup/4/passwd", NotFound),
            ("/hdhr/secret/discover.json", Tuner(Target::Discover)),
            ("/hdhr/discover.json", Tuner(Target::Discover)),
            ("/hdhr/t/auto/v12", Tuner(Target::Channel(12))),
            ("/hdhr/t/capability", Tuner(Target::DeviceXml)),
            // Refused shapes.
            ("", NotFound),
            ("/etc/passwd", NotFound),
            ("/stream/abc", NotFound),
            ("/stream/+5", NotFound),
            ("/stream/4294967296", NotFound),
            ("/stream/1/x", NotFound),
            ("/thumb/x.jpg", NotFound),
            ("/thumb/1.png", NotFound),
            ("/ui/", NotFound),
            ("/hls/3/../../etc", NotFound),
            ("/hls/x/index.m3u8", NotFound),
            ("/hls/3/seg.mp4", NotFound),
            ("/api/streams/1/other", NotFound),
            ("//health", NotFound),
            ("/hdhr/t/auto/vx", NotFound),
        ];
        for (path, want) in cases {
            assert_eq!(&Path::decode(path), want, "{path:?}");
        }
    }

    #[test]
    fn patterns_are_bounded() {
        assert_eq!(pattern_of("/api/streams/42"), "/api/streams/{id}");
        assert_eq!(
            pattern_of("/api/streams/42/programs"),
            "/api/streams/{id}/programs"
        );
        assert_eq!(pattern_of("/etc/passwd"), "other");
        assert_eq!(pattern_of("/health"), "/health");
        assert_eq!(pattern_of("/stream/12"), "/stream/{id}");
        assert_eq!(pattern_of("/hls/3/19a4c-17.ts"), "/hls/{id}/{segment}");
        assert_eq!(pattern_of("/hls/3/../../etc"), "other");
        assert_eq!(
            pattern_of("/hdhr/secret/lineup.json"),
            "/hdhr/{token}/lineup.json"
        );
    }

    #[test]
    fn the_table_and_the_decoder_agree() {
        for r in ROUTES {
            let p = Path::decode(r.example);
            assert_ne!(p, Path::NotFound, "{} does not decode", r.example);
            assert_eq!(p.pattern(), r.pattern, "{}", r.example);
            assert_eq!(p.access(r.method), r.access, "{} {}", r.method, r.pattern);
        }
        // Every pattern the decoder can give (but "other") has a row.
        let mut patterns: Vec<&str> = ROUTES.iter().map(|r| r.pattern).collect();
        patterns.dedup();
        for p in [
            "/",
            "/watch/1",
            "/ui/a",
            "/thumb/1.jpg",
            "/playlist.m3u",
            "/metrics",
            "/epg.xml",
            "/api/streams",
            "/api/streams/1",
            "/api/streams/1/programs",
            "/api/streams/1/status",
            "/api/reload",
            "/api/tokens",
            "/api/tokens/x",
            "/api/schedule",
            "/api/schedule/1",
            "/stream/1",
            "/hls/1/index.m3u8",
            "/hls/1/a-1.ts",
            "/catchup/1.ts",
            "/catchup/1/index.m3u8",
            "/api/recordings",
            "/api/recordings/1",
            "/recordings/1.ts",
            "/recordings.m3u",
            "/catchup/1/5.ts",
            "/health",
            "/login",
            "/logout",
            "/hdhr/x/discover.json",
            "/hdhr/x/lineup.json",
            "/hdhr/x/lineup_status.json",
            "/hdhr/x/lineup.post",
            "/hdhr/x/device.xml",
            "/hdhr/x/auto/v1",
        ] {
            assert!(patterns.contains(&pattern_of(p)), "{p} has no row");
        }
        assert!(Path::Dashboard.is_page() && Path::Watch(1).is_page());
        assert!(!Path::Playlist.is_page());
    }
}
