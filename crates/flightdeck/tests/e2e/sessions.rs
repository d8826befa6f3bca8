//! UI sessions: login, cookie attributes, CSRF on changes, logout, and
//! the login rate limit — each outcome audited.

use serde_json::json;

use crate::harness::{API, Resp, Server, call};

/// A logged-in session: its cookie and CSRF token.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

impl Session {
    pub fn get(&self, s: &Server, path: &str) -> Resp {
        call("GET", &s.url(path), &[("cookie", &self.cookie)], None)
    }

    pub fn send(
        &self,
        s: &Server,
        method: &str,
        path: &str,
        body: serde_json::Value,
        csrf: Option<&str>,
    ) -> Resp {
        let mut h = vec![("cookie", self.cookie.as_str())];
        if let Some(c) = csrf {
            h.push(("x-csrf-token", c));
        }
        call(
            method,
            &s.url(path),
            &h,
            Some(("application/json", body.to_string().into_bytes())),
        )
    }
}

pub fn try_login(s: &Server, user: &str, password: &str) -> Resp {
    call(
        "POST",
        &s.url(&format!("{API}/auth/login")),
        &[],
        Some((
            "application/json",
            json!({"username": user, "password": password})
                .to_string()
                .into_bytes(),
        )),
    )
}

pub fn login(s: &Server, user: &str, password: &str) -> Session {
    let r = try_login(s, user, password);
    assert_eq!(r.status, 200, "{}", r.body);
    let set = r
        .header("set-cookie")
        .expect("no session cookie")
        .to_string();
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    Session {
        cookie: set.split(';').next().unwrap().to_string(),
        csrf: r.json()["csrf_token"].as_str().unwrap().to_string(),
    }
}

#[test]
fn login_csrf_and_logout() {
    let s = Server::binary();
    let sess = login(&s, "admin", &s.password);
    let me = sess.get(&s, &format!("{API}/auth/whoami")).json();
    assert_eq!(me["name"], "admin");
    assert_eq!(me["auth_method"], "session");
    let e = s.last_event(None, "iam.session.login");
    assert_eq!(e["result"]["status"], "success");
    assert_eq!(e["principal"]["type"], "user");
    assert_eq!(e["request_parameters"]["password"], "[REDACTED]");

    // A change without the CSRF token is refused and audited; with it, it works.
    let r = sess.send(
        &s,
        "POST",
        &format!("{API}/projects"),
        json!({"name": "web"}),
        None,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.code(), "csrf_failed");
    assert_eq!(s.get(&format!("{API}/projects/web")).status, 404);
    let e = s.last_event(None, "iam.project.create");
    assert_eq!(e["result"]["error_code"], "csrf_failed");
    let r = sess.send(
        &s,
        "POST",
        &format!("{API}/projects"),
        json!({"name": "web"}),
        Some("wrong"),
    );
    assert_eq!(r.status, 403);
    let r = sess.send(
        &s,
        "POST",
        &format!("{API}/projects"),
        json!({"name": "web"}),
        Some(&sess.csrf),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        s.last_event(None, "iam.project.create")["principal"]["name"],
        "admin"
    );

    // Logout ends the session.
    let r = sess.send(
        &s,
        "POST",
        &format!("{API}/auth/logout"),
        json!({}),
        Some(&sess.csrf),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(sess.get(&s, &format!("{API}/auth/whoami")).status, 401);
    assert_eq!(
        s.last_event(None, "iam.session.logout")["result"]["status"],
        "success"
    );
}

#[test]
fn failed_logins_are_audited_and_rate_limited() {
    let opts = server::ServerOptions {
        login_max_failures: 3,
        ..Default::default()
    };
    let s = Server::in_process(diskio::Faults::disabled(), opts);
    for _ in 0..3 {
        let r = try_login(&s, "admin", "not-the-password");
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let e = s.last_event(None, "iam.session.login");
    assert_eq!(e["result"]["status"], "failure");
    assert_eq!(e["principal"]["type"], "anonymous");
    assert_eq!(e["principal"]["name"], "admin");
    assert!(!e.to_string().contains("not-the-password"));
    // Now even the right password is refused until the window passes.
    let r = try_login(&s, "admin", &s.password);
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.code(), "rate_limited");
    assert_eq!(
        s.last_event(None, "iam.session.login")["result"]["http_status"],
        429
    );
    // The source address is limited too, whatever name it tries next.
    let r = try_login(&s, "nobody", "whatever-password");
    assert_eq!(r.status, 429);
    assert!(!r.body.contains("nobody"));
}
