//! The closed sets that name calls in metrics and spans. A label taken from the
//! request path would let any caller, without credentials, add series (one per
//! made-up method), so a path is named only when it is a method this server
//! offers; anything else is `_OTHER`, as OpenTelemetry names unknown methods.
//! Status codes go by their canonical names (`OK`, `NOT_FOUND`).

/// The label (and `rpc.method`) of a method this server does not offer.
pub const OTHER_METHOD: &str = "_OTHER";

/// Every method this server offers, by path: Keygate's own (checked against
/// the proto files below), health checks and server reflection.
pub const KNOWN_METHODS: [&str; 17] = [
    "/keygate.v1.Authorizer/Authorize",
    "/keygate.v1.KeyService/CreateKey",
    "/keygate.v1.KeyService/GetKey",
    "/keygate.v1.KeyService/ListKeys",
    "/keygate.v1.KeyService/UpdateKey",
    "/keygate.v1.KeyService/RotateKey",
    "/keygate.v1.KeyService/DisableKey",
    "/keygate.v1.KeyService/EnableKey",
    "/keygate.v1.KeyService/RevokeKey",
    "/keygate.v1.KeyService/DeleteKey",
    "/keygate.v1.KeyService/ListKeyEvents",
    "/keygate.v1.KeyService/CreateOrganization",
    "/keygate.v1.KeyService/GetOrganization",
    "/keygate.v1.KeyService/ListOrganizations",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
];

/// The known method at `path`, if it is one.
pub fn known_method(path: &str) -> Option<&'static str> {
    KNOWN_METHODS.iter().find(|known| **known == path).copied()
}

/// `path` as a label value: the path of a known method, else `_OTHER`.
pub fn method_label(path: &str) -> &'static str {
    known_method(path).unwrap_or(OTHER_METHOD)
}

/// The canonical name of a gRPC status code.
pub fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message;

    use super::{code_name, method_label, KNOWN_METHODS};

    /// Every `/package.Service/Method` in an encoded descriptor set.
    fn methods_of(encoded: &[u8]) -> BTreeSet<String> {
        let files = prost_types::FileDescriptorSet::decode(encoded).unwrap();
        let mut methods = BTreeSet::new();
        for file in &files.file {
            for service in &file.service {
                for method in &service.method {
                    let (package, service, method) =
                        (file.package(), service.name(), method.name());
                    methods.insert(format!("/{package}.{service}/{method}"));
                }
            }
        }
        methods
    }

    #[test]
    fn the_known_methods_are_those_the_server_offers() {
        let mut offered = methods_of(crate::grpc::FILE_DESCRIPTOR_SET);
        offered.extend(methods_of(tonic_health::pb::FILE_DESCRIPTOR_SET));
        offered.extend(methods_of(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET));
        let listed: BTreeSet<String> = KNOWN_METHODS.iter().map(|path| path.to_string()).collect();
        assert_eq!(listed, offered);
    }

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(
            method_label("/keygate.v1.KeyService/GetKey"),
            "/keygate.v1.KeyService/GetKey"
        );
        for path in [
            "/keygate.v1.KeyService/MadeUp",
            "/keygate.v1.KeyService/getkey",
            "/x/y",
            "",
            "/",
        ] {
            assert_eq!(method_label(path), "_OTHER", "{path:?}");
        }
    }

    #[test]
    fn codes_go_by_their_canonical_names() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(tonic::Code::Unauthenticated), "UNAUTHENTICATED");
        assert_eq!(code_name(tonic::Code::from_i32(15)), "DATA_LOSS");
    }
}
