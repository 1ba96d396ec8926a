//! EndpointSlices of `discovery.k8s.io/v1beta1`, the version Kubernetes 1.17–1.24 served (and the only
//! one before 1.21): dumps of those clusters hold them. The shapes differ from `v1` only in where an
//! endpoint says where it is: a `topology` map (`kubernetes.io/hostname`, `topology.kubernetes.io/zone`)
//! instead of `nodeName` and `zone`. [`to_v1`] rewrites a raw object as the API server's own conversion
//! does, so the object is then read (and refused when bad) exactly as a `v1` one.

use serde_json::{Map, Value};

/// The apiVersion read here.
pub(crate) const API_VERSION: &str = "discovery.k8s.io/v1beta1";

/// The topology keys the API server converts into `v1` fields (the rest go to `deprecatedTopology`).
const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

/// Rewrites a `discovery.k8s.io/v1beta1` EndpointSlice `map` as `discovery.k8s.io/v1`: each endpoint's
/// `topology` becomes `nodeName` (from `kubernetes.io/hostname`, unless `nodeName` is set), `zone`
/// (from `topology.kubernetes.io/zone`) and `deprecatedTopology` (the other keys). A field of the
/// wrong shape is an error: `(field path, message)`. Other fields are left for the `v1` reading to
/// judge.
pub(crate) fn to_v1(map: &mut Map<String, Value>) -> Result<(), (String, String)> {
    map.insert("apiVersion".to_owned(), Value::String("discovery.k8s.io/v1".to_owned()));
    let Some(Value::Array(endpoints)) = map.get_mut("endpoints") else { return Ok(()) };
    for (i, endpoint) in endpoints.iter_mut().enumerate() {
        let Value::Object(endpoint) = endpoint else { continue };
        let topology = match endpoint.remove("topology") {
            None | Some(Value::Null) => continue,
            Some(Value::Object(topology)) => topology,
            Some(_) => return Err((format!("endpoints[{i}].topology"), "expected a mapping of strings".to_owned())),
        };
        let mut rest = Map::new();
        for (key, value) in topology {
            let Value::String(text) = value else {
                return Err((format!("endpoints[{i}].topology.{key}"), "expected a string".to_owned()));
            };
            match key.as_str() {
                HOSTNAME => {
                    if matches!(endpoint.get("nodeName"), None | Some(Value::Null)) {
                        endpoint.insert("nodeName".to_owned(), Value::String(text));
                    }
                }
                ZONE => {
                    if matches!(endpoint.get("zone"), None | Some(Value::Null)) {
                        endpoint.insert("zone".to_owned(), Value::String(text));
                    }
                }
                _ => {
                    rest.insert(key, Value::String(text));
                }
            }
        }
        if !rest.is_empty() {
            endpoint.insert("deprecatedTopology".to_owned(), Value::Object(rest));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn converted(value: Value) -> Result<Value, (String, String)> {
        let Value::Object(mut map) = value else { panic!("an object") };
        to_v1(&mut map).map(|()| Value::Object(map))
    }

    #[test]
    fn topology_becomes_node_name_zone_and_deprecated_topology() {
        let beta = json!({"apiVersion": API_VERSION, "kind": "EndpointSlice", "endpoints": [
            {"addresses": ["10.0.0.1"], "topology": {HOSTNAME: "node-a", ZONE: "zone-1", "rack": "r7"}},
            {"addresses": ["10.0.0.2"], "nodeName": "node-b", "topology": {HOSTNAME: "stale"}},
            {"addresses": ["10.0.0.3"]},
        ]});
        assert_eq!(
            converted(beta).unwrap(),
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "endpoints": [
                {"addresses": ["10.0.0.1"], "nodeName": "node-a", "zone": "zone-1", "deprecatedTopology": {"rack": "r7"}},
                {"addresses": ["10.0.0.2"], "nodeName": "node-b"},
                {"addresses": ["10.0.0.3"]},
            ]})
        );
    }

    #[test]
    fn a_topology_of_the_wrong_shape_is_an_error_naming_it() {
        let list = json!({"endpoints": [{"addresses": ["10.0.0.1"]}, {"topology": ["node-a"]}]});
        assert_eq!(converted(list).unwrap_err().0, "endpoints[1].topology");
        let number = json!({"endpoints": [{"topology": {HOSTNAME: 7}}]});
        assert_eq!(converted(number).unwrap_err().0, "endpoints[0].topology.kubernetes.io/hostname");
    }
}
