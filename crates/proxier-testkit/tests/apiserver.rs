//! The stand-in API server's protocol: paged lists at one resourceVersion, watches resumed from a
//! resourceVersion (only later events, filtered by selector), 410 Gone once the kept history has moved
//! past it. It serves inside a network namespace the test creates.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use proxier_testkit::Netns;
use proxier_testkit::apiserver::{ApiServer, Kind, Options};
use serde_json::{Value, json};

fn service(name: &str) -> Value {
    json!({"kind": "Service", "apiVersion": "v1", "metadata": {"namespace": "default", "name": name},
           "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 80}]}})
}

fn slice(name: &str, service: Option<&str>) -> Value {
    let labels = service.map_or(json!({}), |s| json!({"kubernetes.io/service-name": s}));
    json!({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
           "metadata": {"namespace": "default", "name": name, "labels": labels},
           "addressType": "IPv4", "endpoints": []})
}

/// GET `path` with `Connection: close`; the body, de-chunked.
fn get(netns: &Netns, address: SocketAddr, path: &str) -> (u16, String) {
    netns.run(|| {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read");
        let text = String::from_utf8(raw).expect("UTF-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            return (status, body.to_owned());
        }
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        (status, out)
    })
}

fn events(body: &str) -> Vec<Value> {
    body.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("event JSON")).collect()
}

#[test]
fn lists_page_at_one_version_and_watches_resume_by_range_until_compacted() {
    let Some(netns) = Netns::for_test("apiserver") else { return };
    netns.ip(&["link", "set", "lo", "up"]).unwrap();
    let listener = netns.run(|| std::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let options = Options { page_size: 2, bookmark_every: Duration::from_secs(60), history: 4 };
    let api = ApiServer::start_with(listener, options);
    let address = api.address();
    for name in ["a", "b", "c"] {
        api.apply(service(name));
    }
    let listed_at = api.resource_version();

    // Paged: every page at the first page's resourceVersion, even after a write in between.
    let (status, first) = get(&netns, address, "/api/v1/services?limit=500");
    assert_eq!(status, 200, "{first}");
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["kind"], "ServiceList");
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["metadata"]["resourceVersion"], listed_at.to_string());
    assert_eq!(first["metadata"]["remainingItemCount"], 1);
    assert!(first["items"][0].get("kind").is_none(), "list items carry no kind");
    api.apply(service("d"));
    let token = first["metadata"]["continue"].as_str().unwrap().replace('/', "%2F");
    let (_, second) = get(&netns, address, &format!("/api/v1/services?limit=500&continue={token}"));
    let second: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(second["metadata"]["resourceVersion"], listed_at.to_string());
    let names: Vec<&str> =
        second["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["c", "d"]);
    assert!(second["metadata"].get("continue").is_none());

    // A watch from the list's version gets exactly the later events, filtered by selector.
    api.apply(slice("web-x", Some("web")));
    api.apply(slice("unowned", None));
    assert!(api.delete(Kind::Service, "default", "a"));
    let (_, body) =
        get(&netns, address, &format!("/api/v1/services?watch=true&resourceVersion={listed_at}&timeoutSeconds=1"));
    let seen: Vec<(String, String)> = events(&body)
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["object"]["metadata"]["name"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(seen, [("ADDED".to_owned(), "d".to_owned()), ("DELETED".to_owned(), "a".to_owned())]);
    let (_, body) = get(
        &netns,
        address,
        &format!(
            "/apis/discovery.k8s.io/v1/endpointslices?watch=true&resourceVersion={listed_at}&timeoutSeconds=1&labelSelector=kubernetes.io%2Fservice-name"
        ),
    );
    let names: Vec<String> =
        events(&body).iter().map(|e| e["object"]["metadata"]["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["web-x"]);

    // Services' history holds 4 events: after more writes, the old version is gone (410), in a
    // watch and in a continue token alike; a current version still watches.
    for name in ["e", "f", "g", "h"] {
        api.apply(service(name));
    }
    let (_, body) =
        get(&netns, address, &format!("/api/v1/services?watch=true&resourceVersion={listed_at}&timeoutSeconds=1"));
    let events = events(&body);
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    let (status, _) = get(&netns, address, &format!("/api/v1/services?limit=500&continue={token}"));
    assert_eq!(status, 410);
    let now = api.resource_version();
    let (_, body) =
        get(&netns, address, &format!("/api/v1/services?watch=true&resourceVersion={now}&timeoutSeconds=1"));
    assert!(body.trim().is_empty(), "{body}");
    // The snapshot is every object now stored.
    let snapshot = api.snapshot();
    assert_eq!(snapshot["items"].as_array().unwrap().len(), 7 + 2);
}
