package org.sparkmoe.driver.router;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.nd4j.common.loader.Source;

import java.io.IOException;
import java.io.InputStream;

/** A DL4J loader {@link Source} read through the Hadoop FileSystem API. */
final class HadoopSource implements Source {
    private final String path;

    HadoopSource(String path) {
        this.path = path;
    }

    @Override
    public InputStream getInputStream() throws IOException {
        Path p = new Path(path);
        return p.getFileSystem(new Configuration()).open(p);
    }

    @Override
    public String getPath() {
        return path;
    }
}
