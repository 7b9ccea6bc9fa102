package outbox.engine;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.opensearch.Version;
import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

/**
 * A single OpenSearch node inside this JVM, for integration tests of the outbox worker.
 *
 * <p>Usage: {@code java -cp ... outbox.engine.EmbeddedOpenSearch <home> [key=value ...]}.
 * {@code <home>} gets config/, data/, logs/, modules/ and plugins/ (created when missing);
 * every further argument is a node setting that overrides the defaults below.
 * The node runs until the JVM receives SIGTERM/SIGINT; a shutdown hook closes it.
 *
 * <p>Started this way the node skips OpenSearch's bootstrap (bootstrap checks, security
 * manager, jar hell, the refusal to run as root), which is what makes it usable as root in CI.
 */
public final class EmbeddedOpenSearch {

    /** Node with the plugins we put on the classpath (there is no plugin directory to load from). */
    private static final class TestNode extends Node {
        TestNode(Environment environment, List<Class<? extends Plugin>> plugins) {
            // third argument: forbidPrivateIndexSettings, true as in a production node
            super(environment, plugins, true);
        }
    }

    private EmbeddedOpenSearch() {}

    public static void main(String[] args) {
        try {
            run(args);
        } catch (Throwable t) {
            // exit even if the half-built node left non-daemon threads behind
            System.err.println("embedded opensearch failed to start:");
            t.printStackTrace();
            Runtime.getRuntime().halt(1);
        }
    }

    private static void run(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: EmbeddedOpenSearch <home> [setting=value ...]");
            System.exit(2);
        }
        Path home = Paths.get(args[0]).toAbsolutePath().normalize();
        for (String dir : new String[] { "config", "data", "logs", "modules", "plugins" }) {
            Files.createDirectories(home.resolve(dir));
        }

        Settings.Builder builder = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", "outbox-test")
            .put("node.name", "outbox-test-node")
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", "9200")
            .put("transport.port", "9300-9399")
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("action.auto_create_index", true);
        for (int i = 1; i < args.length; i++) {
            int eq = args[i].indexOf('=');
            if (eq <= 0) {
                System.err.println("bad setting (want key=value): " + args[i]);
                System.exit(2);
            }
            builder.put(args[i].substring(0, eq), args[i].substring(eq + 1));
        }
        Settings settings = builder.build();

        Environment environment = InternalSettingsPreparer.prepareEnvironment(
            settings,
            Collections.emptyMap(),
            home.resolve("config"),
            () -> "outbox-test-node"
        );
        // Reads config/log4j2*.properties (copied there by scripts/engine.sh); without one,
        // log4j's default configuration prints only errors.
        LogConfigurator.registerErrorListener();
        if (Files.exists(home.resolve("config").resolve("log4j2.properties"))) {
            LogConfigurator.configure(environment);
        } else {
            LogConfigurator.configureWithoutConfig(environment.settings());
        }
        LogConfigurator.setNodeName(environment.settings().get("node.name"));

        List<Class<? extends Plugin>> plugins = List.of(Netty4Plugin.class, CommonAnalysisPlugin.class);
        Node node = new TestNode(environment, plugins);

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                if (!node.awaitClose(20, TimeUnit.SECONDS)) {
                    System.err.println("node did not close within 20s");
                }
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "embedded-opensearch-shutdown"));

        node.start();
        System.out.println("embedded opensearch " + Version.CURRENT + " started, http.port="
            + environment.settings().get("http.port"));
        stopped.await();
    }
}
