package lakehouse.hadoop;

import java.io.DataOutput;
import java.io.File;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.attribute.PosixFileAttributes;
import java.nio.file.attribute.PosixFilePermission;
import java.util.EnumSet;
import java.util.Set;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.LocalFileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;
import org.apache.hadoop.fs.permission.FsPermission;

/**
 * Hadoop's local file system ({@code file:}), with permissions set and read through
 * java.nio instead of a forked {@code chmod} or {@code ls -ld}.
 *
 * <p>Without Hadoop's native library (Spark's jars have none, and no registry here
 * serves one), {@link RawLocalFileSystem} forks a {@code chmod} for every file and
 * directory it creates and an {@code ls -ld} for every permission it reads: about 30
 * processes a second in each streaming driver of {@code make demo} (perf stat,
 * sched:sched_process_exec), each a few milliseconds of CPU outside the JVM. Same
 * files, same modes, same checksums (it is still a {@link LocalFileSystem}).
 *
 * <p>Used as {@code fs.file.impl} (streaming_jobs/common/spark.py).
 */
public class NioLocalFileSystem extends LocalFileSystem {

  public NioLocalFileSystem() {
    super(new Raw());
  }

  /** The raw file system under the checksums. */
  public static class Raw extends RawLocalFileSystem {
    private long blockSize;

    @Override
    public void initialize(URI uri, Configuration conf) throws IOException {
      super.initialize(uri, conf);
      blockSize = getDefaultBlockSize(new Path(uri));
    }

    @Override
    public void setPermission(Path p, FsPermission permission) throws IOException {
      short mode = permission.toShort();
      if ((mode & ~0777) != 0) {
        super.setPermission(p, permission); // the sticky bit: java.nio cannot set it
        return;
      }
      try {
        Files.setPosixFilePermissions(pathToFile(p).toPath(), posix(mode));
      } catch (NoSuchFileException e) {
        throw new FileNotFoundException("File " + p + " does not exist");
      }
    }

    @Override
    public FileStatus getFileStatus(Path f) throws IOException {
      File file = pathToFile(f);
      if (!file.exists()) {
        throw new FileNotFoundException("File " + f + " does not exist");
      }
      return new Status(file, blockSize, this);
    }

    @Override
    public FileStatus[] listStatus(Path f) throws IOException {
      File file = pathToFile(f);
      if (file.exists() && !file.isDirectory()) {
        return new FileStatus[] {getFileStatus(f)};
      }
      return super.listStatus(f); // each entry through getFileStatus above
    }
  }

  /** A file's status whose owner, group and permission are read (once) when asked for. */
  static final class Status extends FileStatus {
    private final File file;
    private boolean loaded;

    Status(File file, long blockSize, FileSystem fs) {
      super(
          file.length(),
          file.isDirectory(),
          1,
          blockSize,
          file.lastModified(),
          0,
          null,
          null,
          null,
          new Path(file.getPath()).makeQualified(fs.getUri(), fs.getWorkingDirectory()));
      this.file = file;
    }

    private synchronized void load() {
      if (loaded) {
        return;
      }
      try {
        PosixFileAttributes attrs =
            Files.readAttributes(file.toPath(), PosixFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
        super.setPermission(new FsPermission(mode(attrs.permissions())));
        super.setOwner(attrs.owner().getName());
        super.setGroup(attrs.group().getName());
      } catch (IOException e) {
        throw new UncheckedIOException("reading the permissions of " + file, e);
      }
      loaded = true;
    }

    @Override
    public FsPermission getPermission() {
      load();
      return super.getPermission();
    }

    @Override
    public String getOwner() {
      load();
      return super.getOwner();
    }

    @Override
    public String getGroup() {
      load();
      return super.getGroup();
    }

    @Override
    public void write(DataOutput out) throws IOException {
      load();
      super.write(out);
    }
  }

  private static final PosixFilePermission[] BITS = {
    PosixFilePermission.OTHERS_EXECUTE,
    PosixFilePermission.OTHERS_WRITE,
    PosixFilePermission.OTHERS_READ,
    PosixFilePermission.GROUP_EXECUTE,
    PosixFilePermission.GROUP_WRITE,
    PosixFilePermission.GROUP_READ,
    PosixFilePermission.OWNER_EXECUTE,
    PosixFilePermission.OWNER_WRITE,
    PosixFilePermission.OWNER_READ,
  };

  static Set<PosixFilePermission> posix(short mode) {
    Set<PosixFilePermission> out = EnumSet.noneOf(PosixFilePermission.class);
    for (int bit = 0; bit < BITS.length; bit++) {
      if ((mode & (1 << bit)) != 0) {
        out.add(BITS[bit]);
      }
    }
    return out;
  }

  static short mode(Set<PosixFilePermission> permissions) {
    int mode = 0;
    for (int bit = 0; bit < BITS.length; bit++) {
      if (permissions.contains(BITS[bit])) {
        mode |= 1 << bit;
      }
    }
    return (short) mode;
  }
}
