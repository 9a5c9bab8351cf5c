//! `/openapi/v2`: the Swagger 2.0 document kube-apiserver serves, from the same schemas as the
//! v3 documents. client-go asks for it in protobuf (gnostic's `openapi.v2.Document`, media type
//! [`PROTOBUF`]) when it validates what OpenAPI v3 cannot place, such as the items of a `v1`
//! List (`kubectl apply -f list.json`); other clients get JSON.
//!
//! Only the parts of gnostic's schema that a Kubernetes document uses are modelled here, with
//! gnostic's field numbers: definitions (type, format, description, `$ref`, properties, items,
//! additionalProperties, required, vendor extensions) and paths (operations with their query
//! parameters and `x-kubernetes-*` extensions).

use serde_json::{json, Map, Value};

/// The media type of the protobuf answer. client-go asks for
/// `application/com.github.proto-openapi.spec.v2@v1.0+protobuf`; like kube-apiserver we answer
/// with the `.v1.0` spelling, since `@` is not valid in a media type client-go parses.
pub const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

const V3_PREFIX: &str = "#/components/schemas/";
const V2_PREFIX: &str = "#/definitions/";

/// `openapi.v2.Document`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "2")]
    info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    definitions: Option<Definitions>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Info {
    #[prost(string, tag = "1")]
    title: String,
    #[prost(string, tag = "2")]
    version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Definitions {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NamedSchema {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Schema>,
}

/// `openapi.v2.Any`: the value as YAML text (JSON is YAML).
#[derive(Clone, PartialEq, prost::Message)]
struct Any {
    #[prost(string, tag = "2")]
    yaml: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NamedAny {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Any>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Schema {
    #[prost(string, tag = "1")]
    r#ref: String,
    #[prost(string, tag = "2")]
    format: String,
    #[prost(string, tag = "4")]
    description: String,
    #[prost(message, optional, tag = "5")]
    default: Option<Any>,
    #[prost(string, repeated, tag = "19")]
    required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    r#enum: Vec<Any>,
    #[prost(message, optional, boxed, tag = "21")]
    additional_properties: Option<Box<AdditionalProperties>>,
    #[prost(message, optional, tag = "22")]
    r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    properties: Option<Properties>,
    #[prost(message, repeated, tag = "31")]
    vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AdditionalProperties {
    #[prost(oneof = "AdditionalOneof", tags = "1, 2")]
    oneof: Option<AdditionalOneof>,
}

// Built once per server start; boxing the schema would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, prost::Oneof)]
enum AdditionalOneof {
    #[prost(message, tag = "1")]
    Schema(Schema),
    #[prost(bool, tag = "2")]
    Boolean(bool),
}

#[derive(Clone, PartialEq, prost::Message)]
struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    value: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Properties {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Paths {
    #[prost(message, repeated, tag = "2")]
    path: Vec<NamedPathItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NamedPathItem {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<PathItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PathItem {
    #[prost(message, optional, tag = "2")]
    get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    delete: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    patch: Option<Operation>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Operation {
    #[prost(string, tag = "5")]
    operation_id: String,
    #[prost(message, repeated, tag = "8")]
    parameters: Vec<ParametersItem>,
    #[prost(message, optional, tag = "9")]
    responses: Option<Responses>,
    #[prost(message, repeated, tag = "13")]
    vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ParametersItem {
    /// `oneof { Parameter parameter = 1; ... }`
    #[prost(message, optional, tag = "1")]
    parameter: Option<Parameter>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Parameter {
    /// `oneof { BodyParameter = 1; NonBodyParameter non_body_parameter = 2 }`
    #[prost(message, optional, tag = "2")]
    non_body_parameter: Option<NonBodyParameter>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NonBodyParameter {
    /// `oneof { ... QueryParameterSubSchema query_parameter_sub_schema = 3; ... }`
    #[prost(message, optional, tag = "3")]
    query_parameter_sub_schema: Option<QueryParameter>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct QueryParameter {
    #[prost(string, tag = "2")]
    r#in: String,
    #[prost(string, tag = "4")]
    name: String,
    #[prost(string, tag = "6")]
    r#type: String,
    #[prost(bool, tag = "20")]
    unique_items: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Responses {
    #[prost(message, repeated, tag = "1")]
    response_code: Vec<NamedResponseValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NamedResponseValue {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<ResponseValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResponseValue {
    /// `oneof { Response response = 1; JsonReference json_reference = 2 }`
    #[prost(message, optional, tag = "1")]
    response: Option<Response>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Response {
    #[prost(string, tag = "1")]
    description: String,
    #[prost(message, optional, tag = "2")]
    schema: Option<SchemaItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SchemaItem {
    /// `oneof { Schema schema = 1; FileSchema file_schema = 2 }`
    #[prost(message, optional, tag = "1")]
    schema: Option<Schema>,
}

/// A v3 component schema rewritten for v2: references point into `#/definitions/`, and
/// `nullable` (not a v2 keyword) is dropped.
pub fn v2_schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, child) in m {
                match (k.as_str(), child) {
                    ("nullable", _) => {}
                    ("$ref", Value::String(r)) => {
                        let name = r.strip_prefix(V3_PREFIX).unwrap_or(r);
                        out.insert(k.clone(), json!(format!("{V2_PREFIX}{name}")));
                    }
                    // Property names are data, not keywords.
                    ("properties", Value::Object(props)) => {
                        let p: Map<String, Value> = props
                            .iter()
                            .map(|(n, s)| (n.clone(), v2_schema(s)))
                            .collect();
                        out.insert(k.clone(), Value::Object(p));
                    }
                    _ => {
                        out.insert(k.clone(), v2_schema(child));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(v2_schema).collect()),
        other => other.clone(),
    }
}

/// A v3 operation (as built for the v3 documents) in v2 form.
fn v2_operation(op: &Value) -> Value {
    let mut out = Map::new();
    if let Some(id) = op.get("operationId") {
        out.insert("operationId".into(), id.clone());
    }
    let params: Vec<Value> = op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| json!({"name": p["name"], "in": p["in"], "type": "string", "uniqueItems": true}))
        .collect();
    out.insert("parameters".into(), Value::Array(params));
    let schema = op
        .pointer("/responses/200/content/application~1json/schema")
        .map(v2_schema)
        .unwrap_or(json!({}));
    out.insert(
        "responses".into(),
        json!({"200": {"description": "OK", "schema": schema}}),
    );
    for (k, v) in op.as_object().into_iter().flatten() {
        if k.starts_with("x-") {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// The v2 JSON document from the v3 schemas and paths.
pub fn document(schemas: &Map<String, Value>, paths: &Map<String, Value>) -> Value {
    let definitions: Map<String, Value> = schemas
        .iter()
        .map(|(k, v)| (k.clone(), v2_schema(v)))
        .collect();
    let paths: Map<String, Value> = paths
        .iter()
        .map(|(p, item)| {
            let ops: Map<String, Value> = item
                .as_object()
                .into_iter()
                .flatten()
                .map(|(verb, op)| (verb.clone(), v2_operation(op)))
                .collect();
            (p.clone(), Value::Object(ops))
        })
        .collect();
    json!({
        "swagger": "2.0",
        "info": {"title": "Atoll", "version": crate::VERSION},
        "paths": paths,
        "definitions": definitions,
    })
}

fn any(v: &Value) -> Any {
    Any {
        yaml: v.to_string(),
    }
}

fn extensions(m: &Map<String, Value>) -> Vec<NamedAny> {
    m.iter()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| NamedAny {
            name: k.clone(),
            value: Some(any(v)),
        })
        .collect()
}

fn str_of(m: &Map<String, Value>, k: &str) -> String {
    m.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

fn schema_pb(v: &Value) -> Schema {
    let Some(m) = v.as_object() else {
        return Schema::default();
    };
    let named = |o: &Map<String, Value>| -> Vec<NamedSchema> {
        o.iter()
            .map(|(n, s)| NamedSchema {
                name: n.clone(),
                value: Some(schema_pb(s)),
            })
            .collect()
    };
    Schema {
        r#ref: str_of(m, "$ref"),
        format: str_of(m, "format"),
        description: str_of(m, "description"),
        default: m.get("default").map(any),
        required: m
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(String::from))
            .collect(),
        r#enum: m
            .get("enum")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(any)
            .collect(),
        additional_properties: m.get("additionalProperties").map(|a| {
            Box::new(AdditionalProperties {
                oneof: Some(match a {
                    Value::Bool(b) => AdditionalOneof::Boolean(*b),
                    s => AdditionalOneof::Schema(schema_pb(s)),
                }),
            })
        }),
        r#type: match m.get("type") {
            Some(Value::String(t)) => Some(TypeItem {
                value: vec![t.clone()],
            }),
            Some(Value::Array(ts)) => Some(TypeItem {
                value: ts
                    .iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect(),
            }),
            _ => None,
        },
        items: m.get("items").map(|i| ItemsItem {
            schema: match i {
                Value::Array(a) => a.iter().map(schema_pb).collect(),
                s => vec![schema_pb(s)],
            },
        }),
        all_of: m
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(schema_pb)
            .collect(),
        properties: m
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| Properties {
                additional_properties: named(p),
            }),
        vendor_extension: extensions(m),
    }
}

fn operation_pb(v: &Value) -> Option<Operation> {
    let m = v.as_object()?;
    Some(Operation {
        operation_id: str_of(m, "operationId"),
        parameters: m
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| ParametersItem {
                parameter: Some(Parameter {
                    non_body_parameter: Some(NonBodyParameter {
                        query_parameter_sub_schema: Some(QueryParameter {
                            r#in: p["in"].as_str().unwrap_or("query").to_string(),
                            name: p["name"].as_str().unwrap_or("").to_string(),
                            r#type: "string".into(),
                            unique_items: true,
                        }),
                    }),
                }),
            })
            .collect(),
        responses: Some(Responses {
            response_code: vec![NamedResponseValue {
                name: "200".into(),
                value: Some(ResponseValue {
                    response: Some(Response {
                        description: "OK".into(),
                        schema: v.pointer("/responses/200/schema").map(|s| SchemaItem {
                            schema: Some(schema_pb(s)),
                        }),
                    }),
                }),
            }],
        }),
        vendor_extension: extensions(m),
    })
}

/// The v2 JSON document encoded as gnostic's protobuf `Document`.
pub fn protobuf(doc: &Value) -> Vec<u8> {
    use prost::Message;
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(p, item)| NamedPathItem {
            name: p.clone(),
            value: Some(PathItem {
                get: item.get("get").and_then(operation_pb),
                put: item.get("put").and_then(operation_pb),
                post: item.get("post").and_then(operation_pb),
                delete: item.get("delete").and_then(operation_pb),
                patch: item.get("patch").and_then(operation_pb),
            }),
        })
        .collect();
    let definitions = doc
        .get("definitions")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(n, s)| NamedSchema {
            name: n.clone(),
            value: Some(schema_pb(s)),
        })
        .collect();
    Document {
        swagger: "2.0".into(),
        info: Some(Info {
            title: "Atoll".into(),
            version: crate::VERSION.into(),
        }),
        paths: Some(Paths { path: paths }),
        definitions: Some(Definitions {
            additional_properties: definitions,
        }),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn v2_refs_point_at_definitions_and_protobuf_round_trips() {
        let schemas: Map<String, Value> = serde_json::from_value(json!({
            "io.k8s.api.core.v1.ConfigMap": {"type": "object", "required": ["metadata"],
                "properties": {"metadata": {"$ref": "#/components/schemas/Meta", "nullable": true},
                    "data": {"type": "object", "additionalProperties": {"type": "string"}}},
                "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "ConfigMap"}]},
            "Meta": {"type": "object", "properties": {"labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
        }))
        .unwrap();
        let paths: Map<String, Value> = serde_json::from_value(json!({
            "/api/v1/namespaces/{namespace}/configmaps/{name}": {"patch": {"operationId": "patchConfigMap",
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/io.k8s.api.core.v1.ConfigMap"}}}}},
                "x-kubernetes-group-version-kind": {"group": "", "version": "v1", "kind": "ConfigMap"}}},
        }))
        .unwrap();
        let doc = document(&schemas, &paths);
        let cm = &doc["definitions"]["io.k8s.api.core.v1.ConfigMap"];
        assert_eq!(cm["properties"]["metadata"]["$ref"], "#/definitions/Meta");
        assert!(cm["properties"]["metadata"].get("nullable").is_none());
        let op = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert_eq!(op["parameters"][0]["name"], "fieldValidation");
        assert_eq!(
            op["responses"]["200"]["schema"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.ConfigMap"
        );

        let pb = Document::decode(protobuf(&doc).as_slice()).unwrap();
        assert_eq!(pb.swagger, "2.0");
        let defs = pb.definitions.unwrap().additional_properties;
        let cm = defs
            .iter()
            .find(|d| d.name == "io.k8s.api.core.v1.ConfigMap")
            .and_then(|d| d.value.clone())
            .unwrap();
        assert_eq!(cm.required, vec!["metadata"]);
        assert_eq!(cm.r#type.unwrap().value, vec!["object"]);
        let gvk = &cm.vendor_extension[0];
        assert_eq!(gvk.name, "x-kubernetes-group-version-kind");
        let yaml: Value = serde_yaml_ng::from_str(&gvk.value.as_ref().unwrap().yaml).unwrap();
        assert_eq!(yaml[0]["kind"], "ConfigMap");
        let props = cm.properties.unwrap().additional_properties;
        let data = props.iter().find(|p| p.name == "data").unwrap();
        match data
            .value
            .as_ref()
            .unwrap()
            .additional_properties
            .as_ref()
            .unwrap()
            .oneof
        {
            Some(AdditionalOneof::Schema(ref s)) => {
                assert_eq!(s.r#type.as_ref().unwrap().value, vec!["string"])
            }
            ref other => panic!("{other:?}"),
        }
        let path = &pb.paths.unwrap().path[0];
        let patch = path.value.as_ref().unwrap().patch.as_ref().unwrap();
        assert_eq!(patch.operation_id, "patchConfigMap");
        let q = patch.parameters[0]
            .parameter
            .as_ref()
            .unwrap()
            .non_body_parameter
            .as_ref()
            .unwrap()
            .query_parameter_sub_schema
            .as_ref()
            .unwrap();
        assert_eq!(
            (q.name.as_str(), q.r#in.as_str()),
            ("fieldValidation", "query")
        );
    }
}
