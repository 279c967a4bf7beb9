package org.sparkmoe.io;

import java.net.URI;
import org.apache.hadoop.fs.RawLocalFileSystem;

/** The local disk under the scheme {@code otherfs:}, standing in for HDFS or S3 in tests. */
public class OtherSchemeFileSystem extends RawLocalFileSystem {

    static final String SCHEME = "otherfs";

    @Override
    public URI getUri() {
        return URI.create(SCHEME + ":///");
    }

    @Override
    public String getScheme() {
        return SCHEME;
    }
}
