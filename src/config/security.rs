//! Settings that work but expose the plant: a webhook to a public host over plain HTTP (the
//! alarm text, and for WeCom and DingTalk the robot's key in the URL, cross the internet in
//! the clear), and an MQTT password sent over plain TCP to another host. `check` warns about
//! them and `run` logs them; with `[gateway] strict_security = true` they are errors. Pure.

use std::net::IpAddr;

use super::daemon::{Mqtt, PasswordSource};
use super::issue::ConfigIssue;
use super::webhooks::Webhook;

/// Every insecure setting among `sinks` (each with the section it was written in) and
/// `webhooks`, as issues at their keys.
pub(super) fn insecure(sinks: &[(&str, &Mqtt)], webhooks: &[Webhook]) -> Vec<ConfigIssue> {
    let mut found = Vec::new();
    for (i, w) in webhooks.iter().enumerate() {
        if let Some(rest) = w.url.strip_prefix("http://")
            && !is_local(host_of(rest))
        {
            found.push(ConfigIssue::new(
                format!("webhooks[{i}].url"),
                format!(
                    "webhook `{}` posts alarms to a public host over plain http://; use https://",
                    w.name
                ),
            ));
        }
    }
    for (section, m) in sinks {
        let Some(password) = &m.password else {
            continue;
        };
        if m.tls.is_none() && !is_local(&m.host) {
            let key = match password {
                PasswordSource::File(_) => "password_file",
                PasswordSource::Credential(_) => "password_credential",
            };
            found.push(ConfigIssue::new(
                format!("{section}.{key}"),
                format!(
                    "the MQTT password goes to {} over plain TCP; add [{section}.tls]",
                    m.host
                ),
            ));
        }
    }
    found
}

/// The host of a URL after its scheme: no user info, port or path.
fn host_of(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    host.split(':').next().unwrap_or(host)
}

/// Whether `host` stays inside the plant: loopback, a private or link-local address, or
/// `localhost`. Any other name may resolve to the internet, so it counts as public.
fn is_local(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local()
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_inside_the_plant_are_local_and_names_are_not() {
        for local in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.10",
            "172.16.0.1",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "localhost",
        ] {
            assert!(is_local(local), "{local}");
        }
        for public in ["8.8.8.8", "oapi.dingtalk.com", "2001:db8::1", "172.32.0.1"] {
            assert!(!is_local(public), "{public}");
        }
    }

    #[test]
    fn the_host_of_a_url_drops_user_port_and_path() {
        assert_eq!(host_of("user:pw@example.com:8080/x?y"), "example.com");
        assert_eq!(host_of("[::1]:80/hook"), "::1");
        assert_eq!(host_of("10.0.0.5/send?key=1"), "10.0.0.5");
    }
}
