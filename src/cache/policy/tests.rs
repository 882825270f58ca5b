//! Unit tests of the storage and request rules: what is cacheable, under which mode.
use super::*;
use http::{Request, Response};

fn rules(mode: CacheMode, authorization: AuthorizationPolicy) -> Rules {
    Rules {
        mode,
        authorization,
        set_cookie: SetCookiePolicy::DoNotStore,
        exclude: None,
        predicate: None,
    }
}

fn check(rules: &Rules, req: Request<()>, res: Response<()>) -> Result<(), NotStorable> {
    let (req, ()) = req.into_parts();
    let (res, ()) = res.into_parts();
    let req_cc = CacheControl::from_headers(&req.headers);
    let res_cc = CacheControl::from_headers(&res.headers);
    rules.check_response(&req, &req_cc, &res, &res_cc)
}

fn get() -> http::request::Builder {
    Request::get("http://a.test/x")
}

fn ok(cc: &str) -> http::response::Builder {
    Response::builder().header("cache-control", cc)
}

#[test]
fn storability_table() {
    let private = rules(CacheMode::Private, AuthorizationPolicy::Bypass);
    let shared = rules(CacheMode::Shared, AuthorizationPolicy::Rfc);
    let store_auth = rules(CacheMode::Private, AuthorizationPolicy::Store);
    let auth = || get().header("authorization", "Bearer x");
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&Rules, Request<()>, Response<()>, Result<(), NotStorable>)> = vec![
        (
            &private,
            get().body(()).unwrap(),
            ok("max-age=5").body(()).unwrap(),
            Ok(()),
        ),
        (
            &private,
            get().body(()).unwrap(),
            ok("no-store").body(()).unwrap(),
            Err(NotStorable::NoStore),
        ),
        (
            &private,
            get().header("cache-control", "no-store").body(()).unwrap(),
            ok("max-age=5").body(()).unwrap(),
            Err(NotStorable::NoStore),
        ),
        (
            &private,
            get().body(()).unwrap(),
            ok("private, max-age=5").body(()).unwrap(),
            Ok(()),
        ),
        (
            &shared,
            get().body(()).unwrap(),
            ok("private, max-age=5").body(()).unwrap(),
            Err(NotStorable::Private),
        ),
        (
            &shared,
            auth().body(()).unwrap(),
            ok("max-age=5").body(()).unwrap(),
            Err(NotStorable::Authorization),
        ),
        (
            &shared,
            auth().body(()).unwrap(),
            ok("public, max-age=5").body(()).unwrap(),
            Ok(()),
        ),
        (
            &shared,
            auth().body(()).unwrap(),
            ok("s-maxage=5").body(()).unwrap(),
            Ok(()),
        ),
        (
            &shared,
            auth().body(()).unwrap(),
            ok("must-revalidate, max-age=5").body(()).unwrap(),
            Ok(()),
        ),
        (
            &private,
            auth().body(()).unwrap(),
            ok("public, max-age=5").body(()).unwrap(),
            Err(NotStorable::Authorization),
        ),
        (
            &store_auth,
            auth().body(()).unwrap(),
            ok("max-age=5").body(()).unwrap(),
            Ok(()),
        ),
        (
            &private,
            get().body(()).unwrap(),
            ok("max-age=5").header("set-cookie", "a=b").body(()).unwrap(),
            Err(NotStorable::SetCookie),
        ),
        (
            &private,
            get().body(()).unwrap(),
            ok("max-age=5").header("vary", "accept, *").body(()).unwrap(),
            Err(NotStorable::VaryStar),
        ),
        (
            &private,
            get().body(()).unwrap(),
            ok("max-age=5").status(206).body(()).unwrap(),
            Err(NotStorable::Status),
        ),
        (
            &private,
            get().body(()).unwrap(),
            ok("max-age=5").status(304).body(()).unwrap(),
            Err(NotStorable::Status),
        ),
        // `must-understand` (§5.2.2.3): a status this cache knows is
        // stored despite the `no-store` meant for caches that do not.
        (
            &private,
            get().body(()).unwrap(),
            ok("max-age=5, must-understand, no-store").body(()).unwrap(),
            Ok(()),
        ),
        (
            &shared,
            get().body(()).unwrap(),
            ok("must-understand, no-store, max-age=5").status(404).body(()).unwrap(),
            Ok(()),
        ),
        // ... and one it does not know is not stored at all.
        (
            &private,
            get().body(()).unwrap(),
            ok("max-age=5, must-understand").status(299).body(()).unwrap(),
            Err(NotStorable::Status),
        ),
        (
            &private,
            get().body(()).unwrap(),
            ok("max-age=5, must-understand").status(206).body(()).unwrap(),
            Err(NotStorable::Status),
        ),
        // The request's own `no-store` still holds.
        (
            &private,
            get().header("cache-control", "no-store").body(()).unwrap(),
            ok("max-age=5, must-understand, no-store").body(()).unwrap(),
            Err(NotStorable::NoStore),
        ),
        // What a response says beside it still holds too.
        (
            &shared,
            get().body(()).unwrap(),
            ok("max-age=5, must-understand, no-store, private").body(()).unwrap(),
            Err(NotStorable::Private),
        ),
    ];
    for (i, (rules, req, res, want)) in cases.into_iter().enumerate() {
        assert_eq!(check(rules, req, res), want, "case {i}");
    }
}

#[test]
fn requests_that_bypass() {
    let mut r = rules(CacheMode::Private, AuthorizationPolicy::Bypass);
    r.exclude = Some(regex::RegexSet::new([r"/private/"]).unwrap());
    let parts = |b: http::request::Builder| b.body(()).unwrap().into_parts().0;
    let check = |p: http::request::Parts, key: &str| r.check_request(&p.method, &p.headers, key);
    assert_eq!(
        check(parts(Request::post("http://a/")), "http://a/"),
        Err(Bypass::Method)
    );
    assert_eq!(
        check(parts(get().header("authorization", "x")), "k"),
        Err(Bypass::Authorization)
    );
    assert_eq!(
        check(parts(get().header("if-none-match", "\"x\"")), "k"),
        Ok(CallerValidators::Present),
        "evaluated against a stored response"
    );
    assert_eq!(
        check(parts(get().header("if-modified-since", "x")), "k"),
        Ok(CallerValidators::Present)
    );
    assert_eq!(
        check(parts(get().header("if-match", "\"x\"")), "k"),
        Err(Bypass::Conditional)
    );
    assert_eq!(
        check(parts(get().header("range", "bytes=0-1")), "k"),
        Err(Bypass::Conditional)
    );
    assert_eq!(check(parts(get()), "http://a/private/1"), Err(Bypass::Excluded));
    assert_eq!(check(parts(get()), "http://a/public/1"), Ok(CallerValidators::Absent));
}

#[test]
fn vary_parsing() {
    let mut h = HeaderMap::new();
    h.append(VARY, "Accept-Encoding, accept-encoding".parse().unwrap());
    h.append(VARY, "X-Custom,, ".parse().unwrap());
    let names = vary_names(&h).unwrap();
    assert_eq!(
        names,
        vec![
            http::HeaderName::from_static("accept-encoding"),
            http::HeaderName::from_static("x-custom")
        ]
    );
    h.append(VARY, http::HeaderValue::from_bytes(b"\xff").unwrap());
    assert_eq!(vary_names(&h), None);
}

#[test]
fn understood_statuses_are_rfc_9110_s_final_ones_less_206_and_304() {
    let understood: Vec<u16> = (100..=999)
        .filter(|code| understood(StatusCode::from_u16(*code).unwrap()))
        .collect();
    let mut want: Vec<u16> = (200..=205).chain(300..=303).collect();
    want.extend([305, 307, 308]);
    want.extend((400..=417).chain([421, 422, 426]).chain(500..=505));
    assert_eq!(understood, want);
}
